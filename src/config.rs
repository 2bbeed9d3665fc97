//! The command line: helper-wide settings, fixed for the life of the process.
//!
//! Per-download settings travel in the requests (docs/protocol.md); these are the knobs a
//! package manager sets once when it spawns the helper. Also which protocol the process
//! speaks ([`Mode`]): JSON Lines unless told otherwise, or apt's method protocol when apt
//! runs the binary under a method's name, or a person's `fetchmux get` ([`get::GetArgs`]).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
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

    /// Seconds an attempt may wait for the first byte of the response once its request is
    /// sent (the connection made, TLS included), and again after each redirect; it holds
    /// even with --low-speed-limit 0 (0 turns it off). A timeout is retried like any
    /// `timeout`.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    pub response_timeout: u64,

    /// Seconds a download may take from the start of its first attempt to its end, retries
    /// and their waits included (curl's name; 0: no limit). Requests may set their own
    /// (`timeout`).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 0.0, value_parser = parse_seconds)]
    pub max_time: f64,

    /// Bytes per second all transfers together may receive (K, M, G suffixes as for
    /// --max-size; 0: no limit), shared evenly by the running transfers.
    #[arg(long, global = true, value_name = "BYTES", default_value = "0", value_parser = parse_size)]
    pub max_speed: u64,

    /// Speak HTTP/1.1 only: no HTTP/2, not even over TLS.
    #[arg(long = "http1.1", global = true)]
    pub http1_1: bool,

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

    /// Seconds a mirror that failed 5 times in a row on its own is put aside the first time;
    /// each later time doubles it, up to 15 minutes. Then it is tried again.
    #[arg(long, global = true, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub put_aside_for: u64,

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
    pub ca_file: Option<PathBuf>,

    /// Directory of certificate authorities to trust for https, in OpenSSL's hashed form
    /// (`openssl rehash DIR`): with --ca-file, both; alone, instead of the system's bundle.
    /// It must be a readable directory when the helper starts.
    #[arg(long, global = true, value_name = "DIR", value_parser = readable_dir)]
    pub ca_path: Option<PathBuf>,

    /// Client certificate (PEM) presented to https servers that ask for one; its key is in
    /// the same file unless --key names another.
    #[arg(long, global = true, value_name = "FILE", value_parser = readable_file)]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, global = true, value_name = "FILE", value_parser = readable_file, requires = "cert")]
    pub key: Option<PathBuf>,

    /// File whose first line is the passphrase of the encrypted private key of --cert/--key
    /// (a file, so that the passphrase is not in the process list).
    #[arg(long, global = true, value_name = "FILE", value_parser = read_secret, requires = "cert")]
    pub key_password_file: Option<Secret>,

    /// Do not verify https servers' certificates nor their names. Anyone on the path can
    /// then serve anything; only the digests a request gives still protect it. Warned about
    /// on stderr and in `hello`.
    #[arg(long, global = true)]
    pub insecure: bool,

    /// Proxy for every request (http://, https://, socks5://, socks5h://; user:password@
    /// in the URL works). Without it, libcurl's environment variables apply (http_proxy,
    /// https_proxy, all_proxy, no_proxy); `""` means no proxy, not even from the environment.
    #[arg(long, global = true, value_name = "URL", value_parser = proxy_url)]
    pub proxy: Option<String>,

    /// USER:PASSWORD for the proxy of --proxy or of the environment.
    #[arg(long, global = true, value_name = "USER:PASSWORD", value_parser = proxy_user)]
    pub proxy_user: Option<Secret>,

    /// Comma-separated hosts (or domains, or `*`) reached without any proxy, in place of
    /// $no_proxy.
    #[arg(long, global = true, value_name = "LIST")]
    pub noproxy: Option<String>,

    /// Use credentials from ~/.netrc for the hosts it names, where a request has none
    /// of its own (curl's --netrc-optional). An entry is sent to its own host only.
    #[arg(long, global = true)]
    pub netrc: bool,

    /// As --netrc, with this file. It must be a readable file when the helper starts.
    #[arg(long, global = true, value_name = "FILE", value_parser = readable_file)]
    pub netrc_file: Option<std::path::PathBuf>,

    /// Every `dest` must lie in this directory: relative ones are taken from it, absolute
    /// ones must be below it, and no `..` or symbolic link may lead out of it (checked by
    /// the kernel, openat2 RESOLVE_BENEATH). It must exist when the helper starts.
    #[arg(long, global = true, value_name = "DIR", value_parser = existing_dir)]
    pub root: Option<std::path::PathBuf>,

    /// Allow `file://` sources (off by default: any file the helper can read could be
    /// copied into the cache). The urlgrabber-ext-down protocol has them on, as yum's own
    /// helper does.
    #[arg(long, global = true)]
    pub file_urls: bool,

    /// User-Agent header sent with every HTTP request [default: fetchmux/<version>
    /// libcurl/<version>]. A request's own User-Agent header wins.
    #[arg(long, global = true, value_name = "TEXT")]
    pub user_agent: Option<String>,

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

    /// Whether requests may name `file://` sources: with `--file-urls`, and always for
    /// urlgrabber's protocol (yum repositories on local disk are `file://` URLs, which
    /// yum's stock helper fetches).
    pub fn file_urls_allowed(&self) -> bool {
        self.file_urls || self.mode == Some(Mode::UrlgrabberExtDown)
    }

    /// How long an attempt may wait for its response to begin (`None`: no limit).
    pub fn response_timeout(&self) -> Option<Duration> {
        (self.response_timeout > 0).then(|| Duration::from_secs(self.response_timeout))
    }

    /// A download's time limit (`None`: no limit).
    pub fn max_time(&self) -> Option<Duration> {
        (self.max_time > 0.0).then(|| Duration::from_secs_f64(self.max_time))
    }

    /// The User-Agent: `--user-agent`, else `fetchmux/<version> libcurl/<version>`.
    pub fn user_agent(&self) -> String {
        match &self.user_agent {
            Some(agent) => agent.clone(),
            None => format!(
                "fetchmux/{} libcurl/{}",
                env!("CARGO_PKG_VERSION"),
                curl::Version::get().version()
            ),
        }
    }
}

/// A path that names a directory now: `--root` is opened once, at start.
fn existing_dir(text: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(text);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(format!("`{text}` is not a directory")),
        Err(e) => Err(format!("cannot use `{text}`: {e}")),
    }
}

/// A path that names a file we can read now: refused at start rather than found out by
/// every https download later (as `tls`, counted against the mirrors).
pub fn readable_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot read `{text}`: {e}"))?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err(format!("`{text}` is not a file")),
        Err(e) => Err(format!("cannot read `{text}`: {e}")),
    }
}

/// A directory we can list now (checked like [`readable_file`]).
fn readable_dir(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match std::fs::read_dir(&path) {
        Ok(_) => Ok(path),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            Err(format!("`{text}` is not a directory"))
        }
        Err(e) => Err(format!("cannot read the directory `{text}`: {e}")),
    }
}

/// A passphrase or credentials: kept out of `Debug` output (and so out of any log of the
/// options).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The first line of a readable file (without its line ending), read at start.
pub fn read_secret(text: &str) -> Result<Secret, String> {
    let path = readable_file(text)?;
    let content =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{text}`: {e}"))?;
    let line = content.lines().next().unwrap_or("");
    Ok(Secret(line.to_string()))
}

/// A proxy URL libcurl will use as meant: an explicit scheme among those it supports for
/// proxies here, or `""` for none. A bare `host:port` would be taken as http by libcurl;
/// asking for the scheme avoids guessing between an http and a SOCKS proxy.
pub fn proxy_url(text: &str) -> Result<String, String> {
    const SCHEMES: [&str; 4] = ["http://", "https://", "socks5://", "socks5h://"];
    let lower = text.to_ascii_lowercase();
    if text.is_empty()
        || SCHEMES
            .iter()
            .any(|s| lower.starts_with(s) && lower.len() > s.len())
    {
        Ok(text.to_string())
    } else {
        // Whatever precedes an `@` may be a password: not echoed.
        let shown = match text.rfind('@') {
            Some(at) => format!("***{}", &text[at..]),
            None => text.to_string(),
        };
        Err(format!(
            "`{shown}` is not a proxy URL: give http://, https://, socks5:// or socks5h:// \
             and a host, e.g. http://proxy.example:3128"
        ))
    }
}

/// `USER:PASSWORD` (the password may be empty, the colon not missing).
fn proxy_user(text: &str) -> Result<Secret, String> {
    if text.contains(':') {
        Ok(Secret(text.to_string()))
    } else {
        Err("--proxy-user takes USER:PASSWORD".to_string())
    }
}

/// Seconds, possibly fractional (`2`, `0.5`): finite and not negative.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=1e9).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "`{text}` is not a number of seconds (examples: 30, 0.5)"
        )),
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
    fn root_must_be_a_directory_and_file_urls_are_opt_in_except_for_urlgrabber() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let o = Options::try_parse_from(["fetchmux", "--root", d]).unwrap();
        assert_eq!(o.root.as_deref(), Some(dir.path()));
        assert!(!o.file_urls_allowed());
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        for bad in [file, dir.path().join("missing")] {
            let err = Options::try_parse_from(["fetchmux", "--root", bad.to_str().unwrap()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad.to_str().unwrap()), "{err}");
        }
        assert!(from(&["fetchmux", "--file-urls"])
            .unwrap()
            .file_urls_allowed());
        assert!(from(&["/usr/libexec/urlgrabber-ext-down"])
            .unwrap()
            .file_urls_allowed());
        assert!(!from(&["/usr/lib/apt/methods/http"])
            .unwrap()
            .file_urls_allowed());
    }

    #[test]
    fn pace_flags() {
        let o = Options::try_parse_from(["fetchmux"]).unwrap();
        assert_eq!(o.response_timeout(), Some(Duration::from_secs(30)));
        assert_eq!((o.max_time(), o.max_speed, o.http1_1), (None, 0, false));
        assert!(o.user_agent().starts_with("fetchmux/"));
        assert!(o.user_agent().contains(" libcurl/"));
        let o = Options::try_parse_from([
            "fetchmux",
            "--max-time",
            "0.5",
            "--max-speed",
            "1M",
            "--http1.1",
            "--response-timeout",
            "0",
            "--user-agent",
            "pm/1",
        ])
        .unwrap();
        assert_eq!(o.max_time(), Some(Duration::from_millis(500)));
        assert_eq!((o.max_speed, o.http1_1), (1 << 20, true));
        assert_eq!(
            (o.response_timeout(), o.user_agent()),
            (None, "pm/1".into())
        );
        for bad in ["-1", "NaN", "soon"] {
            assert!(Options::try_parse_from(["fetchmux", "--max-time", bad]).is_err());
        }
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

    #[test]
    fn netrc_file_must_be_a_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("netrc");
        let err = Options::try_parse_from(["fetchmux", "--netrc-file", missing.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains(missing.to_str().unwrap()), "{err}");
        std::fs::write(&missing, "machine h login u password p\n").unwrap();
        let ok = Options::try_parse_from(["fetchmux", "--netrc-file", missing.to_str().unwrap()]);
        assert_eq!(ok.unwrap().netrc_file.as_deref(), Some(missing.as_path()));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, pass) = (dir.path().join("c.pem"), dir.path().join("pass"));
        std::fs::write(&cert, "").unwrap();
        std::fs::write(&pass, "hunter2\nsecond line\n").unwrap();
        let o = Options::try_parse_from([
            "fetchmux",
            "--cert",
            cert.to_str().unwrap(),
            "--key-password-file",
            pass.to_str().unwrap(),
            "--proxy-user",
            "u:pw-of-u",
        ])
        .unwrap();
        assert_eq!(o.key_password_file.as_ref().unwrap().expose(), "hunter2");
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("pw-of-u"),
            "{shown}"
        );
    }

    #[test]
    fn proxies_need_a_scheme() {
        for ok in [
            "",
            "http://p:3128",
            "HTTPS://p",
            "socks5://p:1080",
            "socks5h://u:p@p",
        ] {
            assert!(proxy_url(ok).is_ok(), "{ok}");
        }
        for bad in ["p:3128", "socks4://p", "http://", "ftp://p"] {
            assert!(proxy_url(bad).is_err(), "{bad}");
        }
        assert!(!proxy_url("p:pw-of-p@h").unwrap_err().contains("pw-of-p"));
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

    #[test]
    fn every_flag_is_in_the_configuration_guide_and_the_protocol_page() {
        use clap::CommandFactory;
        let guide = include_str!("../docs/configuration.md");
        let protocol = include_str!("../docs/protocol.md");
        for arg in Options::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            let flag = format!("`--{long}");
            assert!(
                guide.contains(&flag),
                "docs/configuration.md lacks --{long}"
            );
            assert!(protocol.contains(&flag), "docs/protocol.md lacks --{long}");
        }
    }
}
