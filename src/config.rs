//! The command line: helper-wide settings, fixed for the life of the process.
//!
//! Per-download settings travel in the requests (docs/protocol.md); these are the knobs a
//! package manager sets once when it spawns the helper. Also which protocol the process
//! speaks ([`Mode`]): JSON Lines unless told otherwise, or apt's method protocol when apt
//! runs the binary under a method's name.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// fetchmux: downloads many files at once for a package manager, verifying every byte.
///
/// Requests are read from stdin and events written to stdout, one JSON object per line
/// (see docs/protocol.md). stdin closing means "no more requests": the helper finishes what
/// it has, prints `bye` and exits.
#[derive(Parser, Debug, Clone)]
#[command(name = "fetchmux", version, about, long_about = None)]
pub struct Options {
    /// Connections' worth of transfers at once, in total: that many HTTP/1.x transfers, or
    /// that many HTTP/2 connections of up to --max-streams transfers each.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_parallel: u32,

    /// Connections' worth of transfers at once to one host (scheme, host and port), counted
    /// like --max-parallel.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_per_host: u32,

    /// Cap on a body whose size the request does not give (bytes; K, M, G suffixes are
    /// powers of 1024; 0 means no cap).
    #[arg(long, default_value = "16G", value_parser = parse_size)]
    pub max_size: u64,

    /// Seconds allowed to establish a connection (including TLS).
    #[arg(long, default_value_t = 30)]
    pub connect_timeout: u64,

    /// A transfer slower than this many bytes/s for --low-speed-time seconds fails as
    /// `too_slow` (0 disables the guard).
    #[arg(long, default_value_t = 1024)]
    pub low_speed_limit: u32,

    /// Seconds of --low-speed-limit before a transfer fails as `too_slow`.
    #[arg(long, default_value_t = 30)]
    pub low_speed_time: u64,

    /// Retries per download after a failed attempt (attempts = 1 + retries), across all
    /// its URLs or mirrors.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,

    /// Longest wait before a retry, in seconds (caps the backoff and Retry-After).
    #[arg(long, default_value_t = 30)]
    pub max_retry_wait: u64,

    /// Transfers at once to one mirror, for sets that do not give `max_per_mirror`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_per_mirror: u32,

    /// Transfers sharing one HTTP/2 connection (libcurl also keeps to the server's own
    /// limit).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_streams: u32,

    /// Redirects followed per request (http and https targets only).
    #[arg(long, default_value_t = 10)]
    pub max_redirects: u32,

    /// PEM file of certificate authorities to trust for https (instead of the system's).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<std::path::PathBuf>,

    /// User-Agent header sent with every HTTP request.
    #[arg(long, default_value = concat!("fetchmux/", env!("CARGO_PKG_VERSION")))]
    pub user_agent: String,

    /// Speak another protocol than JSON Lines.
    #[command(subcommand)]
    pub mode: Option<Mode>,
}

/// A protocol other than the default JSON Lines.
#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Be apt's http/https acquire method: apt's method protocol on stdin and stdout
    /// (docs/fronts.md). apt runs the binary this way when it is installed as
    /// `<methods dir>/http` or `https`; this subcommand is for trying it by hand.
    AptMethod,
}

/// The names apt runs its http methods under (`<methods dir>/<scheme>`).
const APT_METHOD_NAMES: [&str; 2] = ["http", "https"];

impl Options {
    /// The options for this process's command line. apt runs a method as
    /// `<methods dir>/<scheme>` with no other argument, so under such a name the command line
    /// is not parsed: defaults, in apt mode.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<Options, clap::Error> {
        let mut args = args.into_iter().peekable();
        let apt_name = args
            .peek()
            .and_then(|argv0| Path::new(argv0).file_name())
            .is_some_and(|name| APT_METHOD_NAMES.iter().any(|n| name == *n));
        let mut options = if apt_name {
            let mut defaults = Options::try_parse_from(["fetchmux"])?;
            defaults.mode = Some(Mode::AptMethod);
            defaults
        } else {
            Options::try_parse_from(args)?
        };
        if options.mode == Some(Mode::AptMethod) {
            // apt retries transient failures itself (Acquire::Retries, with its own delays)
            // and must see each one, marked Transient-Failure.
            options.retries = 0;
        }
        Ok(options)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
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
    }

    fn from(args: &[&str]) -> Result<Options, clap::Error> {
        Options::from_args(args.iter().map(OsString::from))
    }

    #[test]
    fn json_lines_unless_told_or_named_otherwise() {
        let o = from(&["/usr/bin/fetchmux", "--max-parallel", "4"]).unwrap();
        assert_eq!((o.mode, o.max_parallel, o.retries), (None, 4, 5));
        let o = from(&["fetchmux", "--max-parallel", "4", "apt-method"]).unwrap();
        assert_eq!(
            (o.mode, o.max_parallel, o.retries),
            (Some(Mode::AptMethod), 4, 0)
        );
        assert!(from(&["fetchmux", "apt-methods"]).is_err());
    }

    #[test]
    fn under_a_methods_name_apts_argv_is_not_parsed() {
        for argv0 in ["/usr/lib/apt/methods/http", "methods.d/https", "https"] {
            let o = from(&[argv0, "--whatever"]).unwrap();
            assert_eq!(o.mode, Some(Mode::AptMethod), "{argv0}");
            assert_eq!((o.retries, o.max_parallel), (0, 32));
        }
        for argv0 in ["/x/http2", "/x/httpd", "http/fetchmux"] {
            assert_eq!(from(&[argv0]).unwrap().mode, None, "{argv0}");
        }
    }
}
