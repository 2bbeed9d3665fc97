//! The engine's typed API: what a front asks of it ([`Request`]) and what it reports
//! ([`Event`]). Nothing here knows a wire format; each front (`front::jsonl` today) turns its
//! protocol into these types and back.
//!
//! Every check that can be made on a request alone is made by [`Request::validate`], which the
//! engine runs on every submission, so that a request that reaches the scheduler can only fail
//! for reasons outside the helper, and a front cannot forget a check. Every refusal names the
//! field it is about (`` `size` must … ``), so that a client can tell which of its values to
//! fix; a front whose wire names differ may check first with its own names ([`check_url`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::body::digest::Algorithm;
use crate::error::FetchError;
use crate::net::url::{has_userinfo, host_key, redacted, scheme_of, REQUEST_SCHEMES};

/// What a front asks of the engine.
#[derive(Debug)]
pub enum Request {
    Download(Box<Download>),
    Mirrors(MirrorSet),
    Cancel { id: String },
}

/// A front's own reference for a submission, echoed in [`Event::Refused`] (the JSON Lines
/// front uses the line number).
pub type Ticket = u64;

/// Where a download's bytes may come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Candidate URLs for the same bytes, tried in order (a private mirror list).
    Urls(Vec<String>),
    /// A path under each base URL of a declared mirror set.
    Mirror { set: String, path: String },
}

/// An inclusive byte range, as in HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn length(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// A set of mirrors that downloads may name instead of URLs.
#[derive(Debug, Clone)]
pub struct MirrorSet {
    pub set: String,
    /// Base URLs; validation makes each end in `/` and drops repeats.
    pub urls: Vec<String>,
    pub max_per_mirror: Option<usize>,
    /// Credentials for every mirror of the set (a download's own `auth` wins).
    pub auth: Option<Credentials>,
    /// The set's own proxy and TLS settings, over the helper-wide ones.
    pub route: Route,
}

/// How the requests to a mirror set's mirrors travel, where the set says so (a Pulp
/// remote has its own CA, client certificate and proxy). `None` means the helper-wide
/// setting. The `tls` settings replace the helper-wide ones as a whole (a field not given
/// takes its default, not the command line's): a remote's trust and identity belong
/// together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// As [`Transport::proxy`].
    pub proxy: Option<String>,
    pub tls: Option<Box<Tls>>,
}

/// A user name and password for a request's own origin (HTTP Basic, an FTP login). They
/// are sent only to that origin: never after a redirect to another scheme, host or port.
/// The `Debug` form hides the password, as everything that may be printed must.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &crate::net::url::PASSWORD_MASK)
            .finish()
    }
}

/// One file to fetch, verify and put in place.
#[derive(Debug, Clone)]
pub struct Download {
    pub id: String,
    pub source: Source,
    pub dest: PathBuf,
    /// The exact size, when known: a cap while receiving, and checked at the end.
    pub size: Option<u64>,
    /// A cap on a body whose size is not known.
    pub max_size: Option<u64>,
    /// Expected digests as hex, in the order given (validation lowercases them).
    pub hashes: Vec<(Algorithm, String)>,
    /// Extra request headers, sent to the origin of the attempt's URL only, unless
    /// `headers_follow_redirects`.
    pub headers: Vec<(String, String)>,
    /// Send `headers` after a redirect to another origin too (never `Authorization` or
    /// `Cookie`, which stay with their origin as in curl).
    pub headers_follow_redirects: bool,
    /// Credentials for the request's origin (boxed: most requests have none, and a queued
    /// download should not pay for them).
    pub auth: Option<Box<Credentials>>,
    pub priority: i64,
    pub progress: bool,
    pub resume: bool,
    pub range: Option<ByteRange>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    /// `dest` may already hold the start of the body, left by another program (apt's
    /// `partial/` files, urlgrabber's `reget`): keep those bytes and ask for the rest with
    /// `Range` and `If-Range` (the file's mtime), starting over if the server sends it all.
    pub continue_dest: bool,
    /// Give `dest` the server's `Last-Modified` as its modification time (curl's `-R`).
    pub server_mtime: bool,
    /// A 304 to a conditional request says that `dest` is current, so it fails (as
    /// `invalid_request`) when `dest` is not a file. apt clears this: it keeps its copy
    /// elsewhere and asks into an empty `partial/` file name.
    pub not_modified_needs_dest: bool,
    /// Transfer settings of this request where they differ from the helper-wide ones.
    pub transport: Option<Box<Transport>>,
}

/// How one request's transfer runs, for fronts whose protocol sets this per request
/// (urlgrabber's `timeout`, `minrate`, `throttle`, `proxy`, `ssl_*`; apt's configuration).
/// `None` means the helper-wide setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transport {
    pub connect_timeout: Option<Duration>,
    /// Fail as `too_slow` below `bytes_per_second` for `time`.
    pub low_speed: Option<LowSpeed>,
    /// Receive at most this many bytes per second (0: no limit).
    pub max_speed: Option<u64>,
    /// The download's time limit, from the start of its first attempt, retries included
    /// (zero: none, whatever `--max-time` says).
    pub max_time: Option<Duration>,
    /// How long an attempt may wait for the response to begin, in place of
    /// `--response-timeout` (zero: no limit): a front's own timeout setting.
    pub response_timeout: Option<Duration>,
    /// A proxy URL (`http://`, `https://`, `socks5://`, `socks5h://`); `""` means no proxy,
    /// not even from the environment.
    pub proxy: Option<String>,
    pub tls: Tls,
}

/// A transfer slower than `bytes_per_second` for `time` fails as `too_slow`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowSpeed {
    pub bytes_per_second: u32,
    pub time: Duration,
}

/// Per-request TLS settings; the defaults are the helper's (verify everything).
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    /// Client certificate and its key, with their types (`PEM`, `DER`, `P12`).
    pub cert: Option<PathBuf>,
    pub cert_type: Option<String>,
    pub key: Option<PathBuf>,
    pub key_type: Option<String>,
    pub key_password: Option<String>,
    pub verify_peer: bool,
    pub verify_host: bool,
}

impl Default for Tls {
    fn default() -> Tls {
        Tls {
            ca_file: None,
            ca_path: None,
            cert: None,
            cert_type: None,
            key: None,
            key_type: None,
            key_password: None,
            verify_peer: true,
            verify_host: true,
        }
    }
}

impl Download {
    /// A download of `source` into `dest`, with the defaults for everything else.
    pub fn new(id: impl Into<String>, source: Source, dest: impl Into<PathBuf>) -> Download {
        Download {
            id: id.into(),
            source,
            dest: dest.into(),
            size: None,
            max_size: None,
            hashes: Vec::new(),
            headers: Vec::new(),
            headers_follow_redirects: false,
            auth: None,
            priority: 0,
            progress: false,
            resume: false,
            range: None,
            if_none_match: None,
            if_modified_since: None,
            continue_dest: false,
            server_mtime: false,
            not_modified_needs_dest: true,
            transport: None,
        }
    }
}

impl Request {
    /// Check everything that can be checked on the request alone; normalises what has a
    /// canonical form (lowercase digests, mirror paths without a leading `/`, base URLs
    /// ending in `/`).
    pub fn validate(&mut self) -> Result<(), FetchError> {
        match self {
            Request::Download(download) => validate_download(download),
            Request::Mirrors(set) => validate_mirrors(set),
            Request::Cancel { id } => check_id(id),
        }
    }

    /// The id the request names, if any (for refusals).
    pub fn id(&self) -> Option<&str> {
        match self {
            Request::Download(download) => Some(&download.id),
            Request::Cancel { id } => Some(id),
            Request::Mirrors(_) => None,
        }
    }
}

impl From<Download> for Request {
    fn from(download: Download) -> Request {
        Request::Download(Box::new(download))
    }
}

fn invalid(message: impl Into<String>) -> FetchError {
    FetchError::InvalidRequest(message.into())
}

fn validate_download(d: &mut Download) -> Result<(), FetchError> {
    check_id(&d.id)?;
    match &mut d.source {
        Source::Urls(urls) if urls.is_empty() => return Err(invalid("`urls` must not be empty")),
        Source::Urls(urls) => {
            let field = if urls.len() == 1 { "url" } else { "urls" };
            urls.iter().try_for_each(|url| check_url(url, field))?;
            if let Some(auth) = &d.auth {
                check_auth(auth, urls, field)?;
            }
        }
        Source::Mirror { path, .. } => {
            // Checked once the leading `/` is gone: `"/"` would otherwise be accepted and
            // become `""`, the mirror's base URL itself (found by tests, front/jsonl/fuzz.rs).
            *path = path.trim_start_matches('/').to_string();
            check_mirror_path(path)?;
        }
    }
    if let Some(range) = d.range {
        if range.start > range.end {
            return Err(invalid("`range.start` must not be after `range.end`"));
        }
        if d.resume {
            return Err(invalid("`range` and `resume` cannot be combined"));
        }
        if d.continue_dest {
            return Err(invalid("`range` and `continue_dest` cannot be combined"));
        }
        if d.size.is_some_and(|size| size != range.length()) {
            return Err(invalid("`size` must equal the length of `range`"));
        }
    }
    for (name, value) in [
        ("if_none_match", &d.if_none_match),
        ("if_modified_since", &d.if_modified_since),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.chars().any(char::is_control))
        {
            return Err(invalid(format!(
                "`{name}` must be a non-empty header value"
            )));
        }
    }
    if let (Some(auth), Source::Mirror { .. }) = (&d.auth, &d.source) {
        check_auth(auth, &[], "url")?;
    }
    check_dest(&d.dest)?;
    for (algorithm, hex) in &mut d.hashes {
        hex.make_ascii_lowercase();
        if hex.len() != algorithm.output_len() * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "`hashes`: `{}` must be {} hex digits",
                algorithm.name(),
                algorithm.output_len() * 2
            )));
        }
    }
    for (name, value) in &d.headers {
        if name.is_empty() || !name.bytes().all(is_header_name_byte) {
            return Err(invalid(format!(
                "`headers`: {name:?} is not a header name (an HTTP token)"
            )));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(invalid(format!(
                "`headers`: the value of `{name}` has a line break or NUL"
            )));
        }
    }
    if let (Some(size), Some(max)) = (d.size, d.max_size) {
        if size > max {
            return Err(invalid(format!(
                "`size` {size} is larger than `max_size` {max}"
            )));
        }
    }
    Ok(())
}

fn validate_mirrors(raw: &mut MirrorSet) -> Result<(), FetchError> {
    if raw.set.is_empty() || raw.set.chars().any(char::is_control) {
        return Err(invalid("`set` must be a non-empty name"));
    }
    if raw.urls.is_empty() {
        return Err(invalid("`urls`: a mirror set needs at least one URL"));
    }
    if raw.max_per_mirror == Some(0) {
        return Err(invalid("`max_per_mirror` must be at least 1"));
    }
    let mut urls = Vec::with_capacity(raw.urls.len());
    for url in std::mem::take(&mut raw.urls) {
        check_url(&url, "urls")?;
        if let Some(auth) = &raw.auth {
            check_auth(auth, std::slice::from_ref(&url), "urls")?;
        }
        let base = if url.ends_with('/') { url } else { url + "/" };
        if !urls.contains(&base) {
            urls.push(base);
        }
    }
    raw.urls = urls;
    validate_route(&raw.route)
}

/// The files a set's `tls` names must be there now (as the command line's are at start),
/// not found missing by every download later; the proxy must be a proxy URL.
fn validate_route(route: &Route) -> Result<(), FetchError> {
    if let Some(proxy) = &route.proxy {
        crate::config::proxy_url(proxy).map_err(|e| invalid(format!("`proxy`: {e}")))?;
    }
    let Some(tls) = &route.tls else {
        return Ok(());
    };
    let files = [
        ("ca_file", &tls.ca_file),
        ("cert", &tls.cert),
        ("key", &tls.key),
    ];
    for (field, path) in files {
        if let Some(path) = path {
            crate::config::readable_file(&path.to_string_lossy())
                .map_err(|e| invalid(format!("`tls.{field}`: {e}")))?;
        }
    }
    if let Some(dir) = &tls.ca_path {
        if !dir.is_dir() {
            return Err(invalid(format!(
                "`tls.ca_path`: `{}` is not a readable directory",
                dir.display()
            )));
        }
    }
    if tls.key.is_some() && tls.cert.is_none() {
        return Err(invalid("`tls.key` needs `tls.cert`"));
    }
    Ok(())
}

/// Credentials a server can be given: a user name without `:` (Basic authentication joins
/// the two with one), no line breaks or NUL in either, and no second set of credentials in
/// a URL of `field` (which of the two would count is not obvious to a reader).
fn check_auth(auth: &Credentials, urls: &[String], field: &str) -> Result<(), FetchError> {
    if auth.user.is_empty() || auth.user.contains(':') {
        return Err(invalid("`auth.user` must be non-empty and without `:`"));
    }
    for (name, value) in [("user", &auth.user), ("password", &auth.password)] {
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(invalid(format!("`auth.{name}` has a line break or NUL")));
        }
    }
    if urls.iter().any(|url| has_userinfo(url)) {
        return Err(invalid(format!(
            "`auth`: a URL in `{field}` has credentials of its own (user@ or user:password@): give them once"
        )));
    }
    Ok(())
}

fn check_mirror_path(path: &str) -> Result<(), FetchError> {
    if path.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid(
            "`path` must be non-empty, without spaces or control characters (percent-encode them)",
        ));
    }
    if path.contains("://") {
        return Err(invalid(
            "`path` is relative to the mirror's base URL, not a URL",
        ));
    }
    Ok(())
}

/// An id is 1 to 1024 bytes without control characters.
pub fn check_id(id: &str) -> Result<(), FetchError> {
    if id.is_empty() || id.len() > 1024 {
        return Err(invalid("`id` must be 1 to 1024 bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid("`id` must not contain control characters"));
    }
    Ok(())
}

/// A URL a request may name, from its field `field` (for the message). Messages quote the
/// URL as it may be shown: without its password.
pub fn check_url(url: &str, field: &str) -> Result<(), FetchError> {
    let shown = redacted(url);
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid(format!(
            "`{field}`: {shown:?} contains a space or control character (percent-encode it)"
        )));
    }
    let scheme = scheme_of(url)
        .ok_or_else(|| invalid(format!("`{field}`: {shown:?} is not an absolute URL")))?;
    if !REQUEST_SCHEMES.contains(&scheme.as_str()) {
        return Err(FetchError::UnsupportedScheme(format!(
            "`{field}`: scheme `{scheme}` is not supported (use http, https, ftp or file)"
        )));
    }
    if scheme != "file" && host_key(url).is_none() {
        return Err(invalid(format!("`{field}`: {shown:?} has no host")));
    }
    Ok(())
}

fn check_dest(dest: &Path) -> Result<(), FetchError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = dest.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(invalid("`dest` must not be empty"));
    }
    if bytes.contains(&0) {
        return Err(invalid("`dest` must not contain NUL"));
    }
    if bytes.ends_with(b"/") || dest.file_name().is_none() {
        return Err(invalid("`dest` must name a file, not a directory"));
    }
    Ok(())
}

fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------------------
// Events

/// One failed attempt: where it went and why it failed.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub url: String,
    pub error: FetchError,
}

/// How a download succeeded.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Verified bytes fetched from `url` are now at `dest`.
    Fetched {
        url: &'a str,
        /// The HTTP status (`None` for file:// and other schemes without one).
        status: Option<u32>,
        size: u64,
        hashes: &'a [(Algorithm, String)],
        etag: Option<&'a str>,
        last_modified: Option<&'a str>,
    },
    /// `dest` already held a file that passed every check: nothing was fetched.
    Cached {
        size: u64,
        hashes: &'a [(Algorithm, String)],
    },
    /// The server said the file has not changed since the request's validators: `dest` was
    /// left as it was.
    NotModified {
        url: &'a str,
        status: Option<u32>,
        etag: Option<&'a str>,
        last_modified: Option<&'a str>,
    },
}

/// What the engine reports. Borrowed fields keep reporting free of copies.
#[derive(Debug)]
pub enum Event<'a> {
    /// An attempt began (`attempt` counts from 1).
    Started {
        id: &'a str,
        url: &'a str,
        attempt: u32,
    },
    /// Bytes stored so far by the running attempt (a resumed prefix included).
    Progress {
        id: &'a str,
        bytes: u64,
        total: Option<u64>,
    },
    /// The download is finished; `attempts` are the failed attempts before the one that
    /// succeeded.
    Done {
        id: &'a str,
        dest: &'a Path,
        outcome: Outcome<'a>,
        attempts: &'a [Attempt],
        /// Since the request was submitted.
        elapsed: Duration,
    },
    /// The download failed with `error`; `attempts` lists every attempt made.
    Failed {
        id: &'a str,
        error: &'a FetchError,
        attempts: &'a [Attempt],
    },
    /// A mirror kept failing on its own and is not chosen again for `for_` (see
    /// `policy::mirrors`); `url` is its base URL.
    MirrorAside {
        url: &'a str,
        failures: u32,
        for_: Duration,
    },
    /// A mirror put aside is chosen again, on probation.
    MirrorBack { url: &'a str },
    /// A submission was not accepted (invalid, a duplicate id, an unknown mirror set or id).
    Refused {
        ticket: Ticket,
        id: Option<&'a str>,
        error: &'a FetchError,
    },
}

/// What the engine tells a front when it starts.
#[derive(Debug)]
pub struct About<'a> {
    pub version: &'a str,
    pub libcurl: &'a str,
    pub http2: bool,
    /// `--insecure`: https servers are not verified (`hello` says so).
    pub insecure: bool,
}

/// Why the engine stopped before its work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// The parent closed stdout.
    OutputClosed,
}

/// How a run ended, for the front's last words and exit status.
#[derive(Debug)]
pub struct Summary {
    /// Bytes received over the network (a resumed prefix is not counted again).
    pub bytes: u64,
    pub elapsed: Duration,
    pub stop: Option<Stop>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn url(u: &str) -> Source {
        Source::Urls(vec![u.to_string()])
    }

    fn refused(request: impl Into<Request>) -> FetchError {
        request.into().validate().unwrap_err()
    }

    fn valid(request: impl Into<Request>) -> Request {
        let mut request = request.into();
        request.validate().unwrap();
        request
    }

    impl From<MirrorSet> for Request {
        fn from(set: MirrorSet) -> Request {
            Request::Mirrors(set)
        }
    }

    #[test]
    fn a_valid_download_is_normalised() {
        let mut d = Download::new("a", url("http://h/x"), "/tmp/x");
        d.hashes = vec![(Algorithm::Md5, "900150983CD24FB0D6963F7D28E17F72".into())];
        let Request::Download(d) = valid(d) else {
            panic!()
        };
        assert_eq!(d.hashes[0].1, "900150983cd24fb0d6963f7d28e17f72");
        let m = Download::new(
            "m",
            Source::Mirror {
                set: "f".into(),
                path: "/P/a.rpm".into(),
            },
            "/t",
        );
        let Request::Download(m) = valid(m) else {
            panic!()
        };
        assert_eq!(
            m.source,
            Source::Mirror {
                set: "f".into(),
                path: "P/a.rpm".into()
            }
        );
    }

    #[test]
    fn each_check_refuses_what_it_should() {
        let base = || Download::new("a", url("http://h/x"), "/t");
        let mut cases = vec![
            Download::new("", url("http://h/x"), "/t"),
            Download::new("a", Source::Urls(vec![]), "/t"),
            Download::new("a", url("http://h/a b"), "/t"),
            Download::new("a", url("http:///x"), "/t"),
            Download::new("a", url("http://h/x"), "/t/"),
        ];
        let mut d = base();
        d.range = Some(ByteRange { start: 5, end: 1 });
        cases.push(d);
        let mut d = base();
        d.range = Some(ByteRange { start: 0, end: 1 });
        d.resume = true;
        cases.push(d);
        let mut d = base();
        d.hashes = vec![(Algorithm::Sha256, "zz".into())];
        cases.push(d);
        let mut d = base();
        d.headers = vec![("X-A".into(), "1\r\nX-B: 2".into())];
        cases.push(d);
        let mut d = base();
        (d.size, d.max_size) = (Some(5), Some(4));
        cases.push(d);
        for d in cases {
            let shown = format!("{d:?}");
            assert_eq!(refused(d).kind(), ErrorKind::InvalidRequest, "{shown}");
        }
        assert_eq!(
            refused(Download::new("a", url("gopher://h/x"), "/t")).kind(),
            ErrorKind::UnsupportedScheme
        );
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let mut d = Download::new("a", url("http://h/x"), "/t");
        d.auth = Some(Box::new(Credentials {
            user: "u".into(),
            password: "hunter2".into(),
        }));
        let shown = format!("{d:?}");
        assert!(
            shown.contains("\"u\"") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn mirror_sets_get_slashes_and_no_repeats() {
        let set = MirrorSet {
            set: "f".into(),
            urls: vec![
                "http://a/x".into(),
                "http://a/x/".into(),
                "http://b/y/".into(),
            ],
            max_per_mirror: Some(2),
            auth: None,
            route: Route::default(),
        };
        let Request::Mirrors(set) = valid(set) else {
            panic!()
        };
        assert_eq!(set.urls, vec!["http://a/x/", "http://b/y/"]);
        let empty = MirrorSet {
            set: "f".into(),
            urls: vec![],
            max_per_mirror: None,
            auth: None,
            route: Route::default(),
        };
        assert!(Request::Mirrors(empty).validate().is_err());
    }
}
