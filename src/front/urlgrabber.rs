//! yum's external downloader protocol: fetchmux as `urlgrabber-ext-down` (docs/fronts.md;
//! the wire facts are from urlgrabber 4.1.0, which the tests run). One request per line of
//! stdin, `key=value` tokens in urlgrabber's literal format ([`literal`]); one final line
//! per request on stdout, `id size dlsz secs OK` or `id 0 0 0.000 errno code message`, and
//! `id bytes` progress lines for requests that asked for them.
//!
//! This file owns the protocol: request lines → [`api::Download`], events → answer lines,
//! and the mapping of errors onto urlgrabber's errno/code pairs. The parent numbers requests
//! 1, 2, 3 … per helper process and matches answers by that number, so the id of each
//! download is its request counter.

mod literal;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::api::{self, About, ByteRange, Event, LowSpeed, Outcome, Source, Summary, Transport};
use crate::config::Options;
use crate::error::{ErrorKind, FetchError};
use crate::front::{Front, Io, Line};
use crate::io::stdin::MAX_LINE;
use crate::net::url::redacted_text;

use literal::{loads, Value};

/// Progress lines of one request are at least this far apart. The stock helper waits
/// 0.31 s; the engine reports every 0.25 s, and waiting for 0.31 s would let only every
/// second report through, so the front keeps to the engine's pace and only guards it.
const PROGRESS_GAP: Duration = Duration::from_millis(250);

/// The last byte asked for by a range without an end: beyond any file, and still a number
/// servers parse (nginx answers 416 to a last byte that does not fit its 63-bit `off_t`).
/// The API has no open-ended range; this stands for one.
const OPEN_END: u64 = i64::MAX as u64;

/// urlgrabber's defaults for options the parent leaves out (`None` values are not sent).
const DEFAULT_TIMEOUT_SECS: u64 = 300;
const DEFAULT_MINRATE: u32 = 1000;

/// The helper-wide settings of this front: no retries, since the parent retries and fails
/// over to the next mirror itself (a helper retrying a dead mirror with backoff would hold
/// the failover up for minutes), and the stock helper's 5 redirects.
pub fn options(mut options: Options) -> Options {
    options.retries = 0;
    options.max_redirects = 5;
    options
}

/// The front: what it must remember about each unanswered request.
#[derive(Default)]
pub struct UrlGrabber {
    /// The request counter: the id of the last request line.
    count: u64,
    pending: HashMap<u64, Pending>,
}

/// An unanswered request.
struct Pending {
    url: String,
    /// Bytes `filename` held when the request came (a reget prefix), for `dlsz`.
    prefix: u64,
    /// Whether the parent asked for progress lines, and when the last one was written.
    progress: bool,
    last_progress: Option<Instant>,
}

impl Front for UrlGrabber {
    fn start(&mut self, _about: &About<'_>, _io: &mut Io<'_>) {}

    fn input(&mut self, line: Line<'_>, io: &mut Io<'_>) {
        let parsed = match line {
            // The parent never sends blank lines; they are not requests and get no number.
            Line::Text(_, text) if text.iter().all(u8::is_ascii_whitespace) => return,
            Line::Text(_, text) => std::str::from_utf8(text)
                .map_err(|_| Failure::bad_request("the request line is not UTF-8"))
                .and_then(parse_line),
            Line::TooLong(_) => Err(Failure::bad_request(&format!(
                "the request line is longer than {MAX_LINE} bytes"
            ))),
        };
        self.count += 1;
        let id = self.count;
        let request = parsed.and_then(|options| download(id, &options));
        match request {
            Ok(download) => {
                self.pending.insert(id, Pending::of(&download));
                io.submit(id, download.into());
            }
            Err(failure) => write_failure(io.stdout(), id, &failure),
        }
    }

    fn event(&mut self, event: &Event<'_>, io: &mut Io<'_>) {
        match *event {
            // Neither protocol has a word for these.
            Event::Started { .. } | Event::MirrorAside { .. } | Event::MirrorBack { .. } => {}
            Event::Progress { id, bytes, .. } => self.progress(id, bytes, io.stdout()),
            Event::Done {
                id,
                dest,
                ref outcome,
                elapsed,
                ..
            } => {
                let Some((id, pending)) = self.take(id) else {
                    return;
                };
                let size = match *outcome {
                    Outcome::Fetched { size, .. } | Outcome::Cached { size, .. } => size,
                    Outcome::NotModified { .. } => std::fs::metadata(dest).map_or(0, |m| m.len()),
                };
                let dlsz = size.saturating_sub(pending.prefix);
                write_ok(io.stdout(), id, size, dlsz, elapsed);
            }
            Event::Failed { id, error, .. } => {
                if let Some((id, pending)) = self.take(id) {
                    write_failure(io.stdout(), id, &Failure::of(error, &pending.url));
                }
            }
            Event::Refused { ticket, error, .. } => {
                if let Some(pending) = self.pending.remove(&ticket) {
                    write_failure(io.stdout(), ticket, &Failure::of(error, &pending.url));
                }
            }
        }
    }

    /// Failures are answered on the wire, so the exit status is 0 however the run ended
    /// (stdin closed, SIGINT, the parent gone), as the stock helper's.
    fn finish(&mut self, _summary: &Summary, _io: &mut Io<'_>) -> i32 {
        0
    }
}

impl UrlGrabber {
    /// The pending request an event names; it gets no more lines after this.
    fn take(&mut self, id: &str) -> Option<(u64, Pending)> {
        let id: u64 = id.parse().ok()?;
        self.pending.remove(&id).map(|pending| (id, pending))
    }

    fn progress(&mut self, id: &str, bytes: u64, out: &mut Vec<u8>) {
        let Some((id, pending)) = id
            .parse()
            .ok()
            .and_then(|id: u64| Some(id).zip(self.pending.get_mut(&id)))
        else {
            return;
        };
        let now = Instant::now();
        let due = pending
            .last_progress
            .is_none_or(|last| now.duration_since(last) >= PROGRESS_GAP);
        if pending.progress && due {
            pending.last_progress = Some(now);
            let _ = writeln!(out, "{id} {bytes}");
        }
    }
}

impl Pending {
    fn of(download: &api::Download) -> Pending {
        let url = match &download.source {
            Source::Urls(urls) => urls.first().cloned().unwrap_or_default(),
            Source::Mirror { path, .. } => path.clone(),
        };
        // The engine keeps these bytes and appends; `dlsz` counts only what comes now.
        let prefix = if download.continue_dest {
            std::fs::metadata(&download.dest).map_or(0, |m| m.len())
        } else {
            0
        };
        Pending {
            url,
            prefix,
            progress: download.progress,
            last_progress: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests

/// The options of one request line: `key=value` tokens split on single spaces (the stock
/// helper's `line.split(' ')`, then `split('=', 1)`), each value decoded by `_loads`. A key
/// given twice keeps its last value, as `setattr` does.
pub(crate) fn parse_line(line: &str) -> Result<BTreeMap<String, Value>, Failure> {
    let mut options = BTreeMap::new();
    for token in line.split(' ').filter(|t| !t.is_empty()) {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| Failure::bad_request(&format!("`{token}` is not key=value")))?;
        let value = loads(value).map_err(|e| Failure::bad_request(&format!("{key}: {e}")))?;
        options.insert(key.to_string(), value);
    }
    Ok(options)
}

/// The download a request's options describe. Keys not named here are ignored (listed in
/// docs/fronts.md): connection reuse, FTP settings, header size limits, address family.
pub(crate) fn download(
    id: u64,
    options: &BTreeMap<String, Value>,
) -> Result<api::Download, Failure> {
    let get = |key: &str| options.get(key).filter(|v| **v != Value::None);
    let url = text(get("url"), "url")?.ok_or_else(|| Failure::bad_request("no url"))?;
    let filename =
        text(get("filename"), "filename")?.ok_or_else(|| Failure::bad_request("no filename"))?;
    let mut d = api::Download::new(id.to_string(), Source::Urls(vec![url]), filename);
    d.range = byte_range(get("range"))?;
    // `reget` appends to what `filename` holds; with a range the stock helper would shift
    // the range by that much, which no caller does: the range wins.
    d.continue_dest = d.range.is_none() && get("reget").is_some_and(truthy);
    d.max_size = size_cap(get("size"))?;
    d.server_mtime = true;
    d.progress = get("progress_obj").is_some_and(truthy);
    d.headers = headers(&get)?;
    d.transport = Some(Box::new(transport(&get)?));
    Ok(d)
}

/// `range=(a,b)` is Python-style, end-exclusive; `(a,None)`, which the parent normalises to
/// `(a,'')` before sending, runs to the end of the file: [`OPEN_END`] as the last byte
/// (servers answer up to their last byte, RFC 9110 14.1.2); `(None,b)` starts at 0.
fn byte_range(value: Option<&Value>) -> Result<Option<ByteRange>, Failure> {
    let Some(value) = value else {
        return Ok(None);
    };
    let bad = || Failure::new(9, 0, format!("Invalid byte range: {value:?}"));
    let (Value::Tuple(items) | Value::List(items)) = value else {
        return Err(bad());
    };
    let bound = |v: Option<&Value>| match v {
        None | Some(Value::None) => Ok(None),
        Some(Value::Str(s)) if s.is_empty() => Ok(None),
        Some(Value::Int(n)) if *n >= 0 => Ok(Some(*n as u64)),
        Some(_) => Err(bad()),
    };
    let start = bound(items.first())?.unwrap_or(0);
    let end = match bound(items.get(1))? {
        Some(end) if end <= start => return Err(bad()),
        Some(end) => end - 1,
        None if start == 0 => return Ok(None),
        None => OPEN_END,
    };
    Ok(Some(ByteRange { start, end }))
}

/// `size` is an expectation, not a promise: the stock helper aborts once more than
/// `size * 1.10` bytes arrived; 0 (unknown) sets no cap of its own.
fn size_cap(value: Option<&Value>) -> Result<Option<u64>, Failure> {
    match value.map(number).transpose()? {
        Some(size) if size > 0.0 => Ok(Some((size * 1.10) as u64)),
        _ => Ok(None),
    }
}

/// `http_headers` (`tag:value` pairs), `user_agent`, `no_cache` and the credentials.
fn headers<'a>(get: &impl Fn(&str) -> Option<&'a Value>) -> Result<Vec<(String, String)>, Failure> {
    let mut headers = Vec::new();
    if let Some(agent) = text(get("user_agent"), "user_agent")? {
        headers.push(("User-Agent".to_string(), agent));
    }
    if let Some(Value::Tuple(pairs) | Value::List(pairs)) = get("http_headers") {
        for pair in pairs {
            let (Value::Tuple(kv) | Value::List(kv)) = pair else {
                return Err(Failure::bad_request("http_headers holds a non-pair"));
            };
            let [tag, value] = kv.as_slice() else {
                return Err(Failure::bad_request("http_headers holds a non-pair"));
            };
            headers.push((scalar_text(tag), scalar_text(value)));
        }
    }
    if get("no_cache").is_some_and(truthy) {
        headers.push(("Pragma".to_string(), "no-cache".to_string()));
    }
    let user = text(get("username"), "username")?;
    let password = text(get("password"), "password")?;
    // As the stock helper: credentials only when both are given. Sent as a header rather
    // than URL userinfo so that the URL (and every message naming it) carries no secret;
    // like every request header it goes to the request's own origin only (net::redirect).
    if let (Some(user), Some(password)) = (user, password) {
        if !user.is_empty() && !password.is_empty() {
            let basic = base64(format!("{user}:{password}").as_bytes());
            headers.push(("Authorization".to_string(), format!("Basic {basic}")));
        }
    }
    Ok(headers)
}

/// Timeouts, speed limits, proxy and TLS, as the stock helper sets them on pycurl.
fn transport<'a>(get: &impl Fn(&str) -> Option<&'a Value>) -> Result<Transport, Failure> {
    // pycurl gets `int(timeout)` for both CONNECTTIMEOUT and LOW_SPEED_TIME.
    let timeout = match get("timeout") {
        Some(v) => number(v)?.max(0.0) as u64,
        None => DEFAULT_TIMEOUT_SECS,
    };
    let minrate = match get("minrate") {
        Some(v) => number(v)?.max(0.0) as u32,
        None => 0,
    };
    let minrate = if minrate == 0 {
        DEFAULT_MINRATE
    } else {
        minrate
    };
    // The low-speed guard also bounds the wait for the response, in curl: the response
    // timeout is the same time (0: none, as the stock helper would wait).
    let (connect_timeout, low_speed, response_timeout) = if timeout == 0 {
        // 0 is curl's "no limit" for both: its own connect default, no speed guard.
        (
            Some(Duration::from_secs(DEFAULT_TIMEOUT_SECS)),
            None,
            Duration::ZERO,
        )
    } else {
        let time = Duration::from_secs(timeout);
        (
            Some(time),
            Some(LowSpeed {
                bytes_per_second: minrate,
                time,
            }),
            time,
        )
    };
    Ok(Transport {
        connect_timeout,
        low_speed,
        max_speed: Some(max_speed(get("throttle"), get("bandwidth"))?),
        proxy: text(get("proxy"), "proxy")?,
        tls: tls(get)?,
        // urlgrabber has no overall limit: --max-time, if given.
        max_time: None,
        response_timeout: Some(response_timeout),
    })
}

/// `raw_throttle()`: an int `throttle` is bytes/s, a float one a fraction of `bandwidth`;
/// 0 or less is no limit.
fn max_speed(throttle: Option<&Value>, bandwidth: Option<&Value>) -> Result<u64, Failure> {
    let bandwidth = bandwidth.map(number).transpose()?.unwrap_or(0.0);
    let speed = match throttle {
        None => 0.0,
        Some(Value::Float(fraction)) => bandwidth * fraction,
        Some(v) => number(v)?,
    };
    Ok(if speed > 0.0 { speed as u64 } else { 0 })
}

fn tls<'a>(get: &impl Fn(&str) -> Option<&'a Value>) -> Result<api::Tls, Failure> {
    let path =
        |key: &str| text(get(key), key).map(|v| v.filter(|s| !s.is_empty()).map(PathBuf::from));
    // The stock helper gives the one value to both CAINFO and CAPATH: a file or a directory.
    let ca = path("ssl_ca_cert")?;
    let (cert, key) = (path("ssl_cert")?, path("ssl_key")?);
    // The parent always sends the types ('PEM'); they only mean something with a file.
    let cert_type = text(get("ssl_cert_type"), "ssl_cert_type")?.filter(|_| cert.is_some());
    let key_type = text(get("ssl_key_type"), "ssl_key_type")?.filter(|_| key.is_some());
    Ok(api::Tls {
        ca_file: ca.clone(),
        ca_path: ca,
        cert,
        cert_type,
        key,
        key_type,
        key_password: text(get("ssl_key_pass"), "ssl_key_pass")?,
        verify_peer: get("ssl_verify_peer").is_none_or(truthy),
        verify_host: get("ssl_verify_host").is_none_or(truthy),
    })
}

/// A string option (`None` when absent).
fn text(value: Option<&Value>, key: &str) -> Result<Option<String>, Failure> {
    match value {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Failure::bad_request(&format!("{key} is not a string"))),
    }
}

/// A header tag or value as Python's `'%s' % v` would write it.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        other => format!("{other:?}"),
    }
}

fn number(value: &Value) -> Result<f64, Failure> {
    match *value {
        Value::Int(n) => Ok(n as f64),
        Value::Float(f) => Ok(f),
        Value::Bool(b) => Ok(f64::from(u8::from(b))),
        _ => Err(Failure::bad_request(&format!("{value:?} is not a number"))),
    }
}

/// Python truthiness, for the flags.
fn truthy(value: &Value) -> bool {
    match value {
        Value::None => false,
        Value::Bool(b) => *b,
        Value::Int(n) => *n != 0,
        Value::Float(f) => *f != 0.0,
        Value::Str(s) => !s.is_empty(),
        Value::Tuple(v) | Value::List(v) => !v.is_empty(),
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Answers

/// A failed request as urlgrabber reports it: `URLGrabError.errno`, its `code` (the HTTP
/// status, or curl's error number, 0 for none) and `strerror`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub errno: i32,
    pub code: u32,
    pub message: String,
}

/// urlgrabber's errno values (`grabber.py`'s docstring).
const BAD_URL: i32 = 1;
const RANGE_ERROR: i32 = 9;
const TIMEOUT: i32 = 12;
const CURL_ERROR: i32 = 14;
const USER_ABORT: i32 = 15;
const LOCAL_WRITE: i32 = 16;

impl Failure {
    fn new(errno: i32, code: u32, message: String) -> Failure {
        Failure {
            errno,
            code,
            message,
        }
    }

    /// A request line fetchmux cannot carry out. urlgrabber's "bad URL" is the nearest
    /// errno, and it is not in the default `retrycodes`: asking again cannot help.
    fn bad_request(why: &str) -> Failure {
        Failure::new(BAD_URL, 0, format!("Bad request: {why}"))
    }

    /// `error`, ending a download of `url`, in the words of the stock helper where it has
    /// them (`PyCurlFileObject._do_perform`).
    pub(crate) fn of(error: &FetchError, url: &str) -> Failure {
        let curl = |code: u32| Failure::new(CURL_ERROR, code, format!("curl#{code} - \"{error}\""));
        match error.kind() {
            ErrorKind::Timeout | ErrorKind::TooSlow => {
                Failure::new(TIMEOUT, 0, format!("Timeout on {url}: (28, '{error}')"))
            }
            ErrorKind::HttpStatus => {
                let status = error.status().unwrap_or(0);
                Failure::new(CURL_ERROR, status, http_error(url, status))
            }
            ErrorKind::RangeNotSatisfied => {
                Failure::new(RANGE_ERROR, 0, format!("{error} on {url}"))
            }
            ErrorKind::Io => Failure::new(
                LOCAL_WRITE,
                0,
                format!("error writing local file from {url}, {error}"),
            ),
            ErrorKind::InvalidRequest => {
                Failure::new(BAD_URL, 0, format!("Bad URL: {url} : {error}"))
            }
            ErrorKind::Cancelled | ErrorKind::Aborted => {
                Failure::new(USER_ABORT, 0, error.to_string())
            }
            // The curl error each kind comes from, so the parent sees the code pycurl gives.
            ErrorKind::UnsupportedScheme => curl(1),
            ErrorKind::Dns => curl(6),
            ErrorKind::Connect => curl(7),
            ErrorKind::NotFound => curl(37),
            ErrorKind::Truncated => curl(18),
            ErrorKind::TooManyRedirects => curl(47),
            ErrorKind::TooLarge => curl(63),
            ErrorKind::Tls => curl(35),
            // pycurl says 5 (could not resolve proxy), 7 or 97; 7 is what a dead proxy gives.
            ErrorKind::Proxy => curl(7),
            ErrorKind::Network | ErrorKind::SizeMismatch | ErrorKind::ChecksumMismatch => curl(56),
        }
    }
}

/// `HTTP Error 404 - Not Found`: the scheme in capitals, the status, and Python's reason
/// phrase (`http.client.responses`) for http and https, else curl's words.
fn http_error(url: &str, status: u32) -> String {
    let scheme = url
        .split_once("://")
        .map_or("http", |(s, _)| s)
        .to_ascii_lowercase();
    let phrase = match (scheme.as_str(), reason_phrase(status)) {
        ("http" | "https", Some(phrase)) => phrase.to_string(),
        _ => format!("The requested URL returned error: {status}"),
    };
    format!("{} Error {status} - {phrase}", scheme.to_ascii_uppercase())
}

/// Python's `http.HTTPStatus` phrases for the error statuses a mirror answers with.
fn reason_phrase(status: u32) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => return None,
    })
}

/// `id size dlsz secs OK`.
fn write_ok(out: &mut Vec<u8>, id: u64, size: u64, dlsz: u64, elapsed: Duration) {
    let _ = writeln!(out, "{id} {size} {dlsz} {:.3} OK", elapsed.as_secs_f64());
}

/// `id 0 0 0.000 errno code message`, on one line whatever the message holds.
fn write_failure(out: &mut Vec<u8>, id: u64, failure: &Failure) {
    // The message quotes the URL (and curl's words): never its password.
    let message: String = redacted_text(&failure.message)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let _ = writeln!(
        out,
        "{id} 0 0 0.000 {} {} {message}",
        failure.errno, failure.code
    );
}

#[cfg(test)]
mod tests;
