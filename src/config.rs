//! The command line: helper-wide settings, fixed for the life of the process.
//!
//! Per-download settings travel in the requests (docs/protocol.md); these are the knobs a
//! package manager sets once when it spawns the helper. Also which protocol the process
//! speaks ([`Mode`]): JSON Lines unless told otherwise, or apt's method protocol when apt
//! runs the binary under a method's name, or a person's `fetchmux get` ([`get::GetArgs`]).

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod get;
mod version;

/// The one line `-h` and the man page's NAME give.
const ABOUT: &str =
    "Download many files at once for a package manager, verifying every byte (see --help)";

/// What `--help` says before the options: what the program is and how it is driven.
const LONG_ABOUT: &str = "\
fetchmux downloads many files at once for a package manager, in one process, verifying \
size and digests while the bytes stream in; only verified bytes ever reach a destination.

By default it is a helper that a program spawns: it reads download requests on stdin and \
writes events on stdout, one JSON object per line (JSON Lines). Closing stdin means \"no \
more requests\": it finishes what it has, prints `bye` and exits. The protocol is in \
docs/protocol.md (installed under share/doc/fetchmux/ by `make install`).

To download files yourself, from a terminal or a script, use `fetchmux get URL...` \
(see `fetchmux get --help`).";

/// The options below apply in every mode; they may also follow the subcommand
/// (`fetchmux get -j 8 URL`).
#[derive(Parser, Debug, Clone)]
#[command(name = "fetchmux", version, propagate_version = true)]
#[command(about = ABOUT, long_about = LONG_ABOUT)]
#[command(next_help_heading = "Engine options (every mode; may follow the subcommand)")]
pub struct Options {
    /// Connections' worth of transfers at once, in total: that many HTTP/1.x transfers, or
    /// that many HTTP/2 connections of up to --max-streams transfers each.
    #[arg(short = 'j', long, global = true, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_parallel: u32,

    /// Connections' worth of transfers at once to one host (scheme, host and port), counted
    /// like --max-parallel.
    #[arg(long, global = true, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_per_host: u32,

    /// Cap on a body whose size the request does not give (bytes; K, M, G suffixes are
    /// powers of 1024; 0 means no cap).
    #[arg(long, global = true, default_value = "16G", value_parser = parse_size)]
    pub max_size: u64,

    /// Seconds allowed to establish a connection (including TLS).
    #[arg(long, global = true, default_value_t = 30)]
    pub connect_timeout: u64,

    /// A transfer slower than this many bytes/s for --low-speed-time seconds fails as
    /// `too_slow` (0 disables the guard).
    #[arg(long, global = true, default_value_t = 1024)]
    pub low_speed_limit: u32,

    /// Seconds of --low-speed-limit before a transfer fails as `too_slow`.
    #[arg(long, global = true, default_value_t = 30)]
    pub low_speed_time: u64,

    /// Retries per download after a failed attempt (attempts = 1 + retries), across all
    /// its URLs or mirrors.
    #[arg(long, global = true, default_value_t = 5)]
    pub retries: u32,

    /// Longest wait before a retry, in seconds (caps the backoff and Retry-After).
    #[arg(long, global = true, default_value_t = 30)]
    pub max_retry_wait: u64,

    /// Transfers at once to one mirror, for sets that do not give `max_per_mirror`.
    #[arg(long, global = true, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_per_mirror: u32,

    /// Transfers sharing one HTTP/2 connection (libcurl also keeps to the server's own
    /// limit).
    #[arg(long, global = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_streams: u32,

    /// Redirects followed per request (http and https targets only).
    #[arg(long, global = true, default_value_t = 10)]
    pub max_redirects: u32,

    /// PEM file of certificate authorities to trust for https (instead of the system's).
    /// It must be a readable file when the helper starts.
    #[arg(long, global = true, value_name = "PATH", value_parser = readable_file)]
    pub ca_file: Option<std::path::PathBuf>,

    /// User-Agent header sent with every HTTP request.
    #[arg(long, global = true, default_value = concat!("fetchmux/", env!("CARGO_PKG_VERSION")))]
    pub user_agent: String,

    /// Speak another protocol than JSON Lines.
    #[command(subcommand)]
    pub mode: Option<Mode>,
}

/// What the process does instead of the default JSON Lines helper: another helper protocol
/// (docs/fronts.md), each also chosen by the name a package manager runs the binary under;
/// `get` for people; `generate` for packagers.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Download the URLs given (or listed with -i) into the current directory or -o DIR,
    /// with a progress line per transfer on a terminal.
    Get(get::GetArgs),
    /// Be apt's http/https acquire method: apt's method protocol on stdin and stdout. apt
    /// runs the binary this way when it is installed as `<methods dir>/http` or `https`.
    AptMethod,
    /// Be yum's external downloader: urlgrabber-ext-down's protocol on stdin and stdout.
    /// urlgrabber runs the binary this way when it is installed as
    /// /usr/libexec/urlgrabber-ext-down or named by $URLGRABBER_EXT_DOWN.
    #[command(name = "urlgrabber-ext-down")]
    UrlgrabberExtDown,
    /// Write the man pages or a shell's completion script (for `make install` and packagers).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// What `fetchmux generate` writes.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Generate {
    /// The man pages (fetchmux.1 and one per subcommand, as fetchmux-get.1) into DIR.
    Man { dir: std::path::PathBuf },
    /// The completion script for SHELL, on stdout.
    Completions { shell: clap_complete::Shell },
}

impl Mode {
    /// The mode a package manager means by running the binary as `program`: apt runs a
    /// method as `<methods dir>/<scheme>`, urlgrabber its helper by its path.
    fn of_program(program: &OsStr) -> Option<Mode> {
        match Path::new(program).file_name()?.to_str()? {
            "http" | "https" => Some(Mode::AptMethod),
            "urlgrabber-ext-down" => Some(Mode::UrlgrabberExtDown),
            _ => None,
        }
    }
}

impl Options {
    /// The options for this process's command line. Under a package manager's helper name
    /// (see [`Mode::of_program`]) the arguments are not parsed, as they are the package
    /// manager's, not ours: defaults, in that mode.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<Options, clap::Error> {
        let mut args = args.into_iter().peekable();
        if let Some(mode) = args.peek().and_then(|argv0| Mode::of_program(argv0)) {
            let mut defaults = Options::try_parse_from(["fetchmux"])?;
            defaults.mode = Some(mode);
            return Ok(defaults);
        }
        let matches = Options::command_with_versions().try_get_matches_from(args)?;
        Options::from_arg_matches(&matches)
    }

    /// The command line as clap sees it, with `--version` telling libcurl's version and
    /// features too (known only at run time, so not in the derive).
    pub fn command_with_versions() -> clap::Command {
        Options::command()
            .version(version::short())
            .long_version(version::long())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }
}

/// A path that names a file we can read now: refused at start rather than found out by
/// every https download later (as `tls`, counted against the mirrors).
fn readable_file(text: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(text);
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot read `{text}`: {e}"))?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err(format!("`{text}` is not a file")),
        Err(e) => Err(format!("cannot read `{text}`: {e}")),
    }
}

/// `1024`, `64K`, `10M`, `16G` (binary multiples).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        Some((i, 'T' | 't')) => (&text[..i], 40),
        _ => (text, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (examples: 1048576, 512K, 10M, 16G)"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("16G"), Ok(16 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn defaults_parse() {
        let o = Options::try_parse_from(["fetchmux"]).unwrap();
        assert_eq!(o.max_parallel, 32);
        assert!(Options::try_parse_from(["fetchmux", "--max-parallel", "0"]).is_err());
        assert_eq!(o.mode, None);
    }

    #[test]
    fn ca_file_must_be_a_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "").unwrap();
        let ok = Options::try_parse_from(["fetchmux", "--ca-file", pem.to_str().unwrap()]);
        assert_eq!(ok.unwrap().ca_file.as_deref(), Some(pem.as_path()));
        for bad in [dir.path().join("missing.pem"), dir.path().to_path_buf()] {
            let err = Options::try_parse_from(["fetchmux", "--ca-file", bad.to_str().unwrap()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad.to_str().unwrap()), "{err}");
        }
    }

    fn from(args: &[&str]) -> Result<Options, clap::Error> {
        Options::from_args(args.iter().map(OsString::from))
    }

    #[test]
    fn json_lines_unless_told_or_named_otherwise() {
        let o = from(&["/usr/bin/fetchmux", "--max-parallel", "4"]).unwrap();
        assert_eq!((o.mode, o.max_parallel), (None, 4));
        for (name, mode) in [
            ("apt-method", Mode::AptMethod),
            ("urlgrabber-ext-down", Mode::UrlgrabberExtDown),
        ] {
            let o = from(&["fetchmux", "--max-parallel", "4", name]).unwrap();
            assert_eq!((o.mode, o.max_parallel), (Some(mode), 4), "{name}");
        }
        assert!(from(&["fetchmux", "apt-methods"]).is_err());
    }

    #[test]
    fn get_takes_the_engine_options_after_it_and_j_is_max_parallel() {
        let o = from(&[
            "fetchmux",
            "get",
            "-j",
            "4",
            "http://h/a",
            "--retries",
            "1",
            "-o",
            "d",
        ]);
        let o = o.unwrap();
        assert_eq!((o.max_parallel, o.retries), (4, 1));
        let Some(Mode::Get(args)) = o.mode else {
            panic!("get: {:?}", o.mode)
        };
        assert_eq!(args.urls, ["http://h/a"]);
        assert_eq!(args.dir.as_deref(), Some(Path::new("d")));
        assert!(from(&["fetchmux", "get", "-o", "d", "-O", "n", "http://h/a"]).is_err());
    }

    #[test]
    fn under_a_helpers_name_the_arguments_are_not_parsed() {
        for (argv0, mode) in [
            ("/usr/lib/apt/methods/http", Mode::AptMethod),
            ("methods.d/https", Mode::AptMethod),
            ("https", Mode::AptMethod),
            ("/usr/libexec/urlgrabber-ext-down", Mode::UrlgrabberExtDown),
        ] {
            let o = from(&[argv0, "--whatever"]).unwrap();
            assert_eq!((o.mode, o.max_parallel), (Some(mode), 32), "{argv0}");
        }
        for argv0 in ["/x/http2", "/x/httpd", "http/fetchmux", "urlgrabber"] {
            assert_eq!(from(&[argv0]).unwrap().mode, None, "{argv0}");
        }
    }
}
