//! The wire protocol: request lines read from stdin and event lines written to stdout.
//!
//! Parsing is strict: an unknown field is an error (a typo must not silently change what gets
//! downloaded), except fields starting with `x-`, which are the client's own bookkeeping and
//! are ignored. Every check that can be made on the line alone is made here, so that a
//! request that reaches the scheduler can only fail for reasons outside the helper.
//! docs/protocol.md is the user-facing contract; docs/protocol.schema.json describes every
//! event these types produce, and the integration tests hold real output against it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::body::digest::Algorithm;
use crate::error::FetchError;

/// Version of the protocol this binary speaks (sent in `hello`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line accepted, in bytes. A longer line is consumed and answered with one
/// `invalid` event; it is never held in memory whole.
pub const MAX_LINE: usize = 1024 * 1024;

/// Schemes a request may name. Redirects are narrower: http and https only.
pub const REQUEST_SCHEMES: [&str; 4] = ["http", "https", "ftp", "file"];

/// One parsed, validated request line.
#[derive(Debug)]
pub enum Request {
    Download(Box<Download>),
    Mirrors(MirrorSetDecl),
    Cancel { id: String },
}

/// Where a download's bytes may come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Candidate URLs for the same bytes, tried in order (a private mirror list).
    Urls(Vec<String>),
    /// A path under each base URL of a declared mirror set.
    Mirror { set: String, path: String },
}

/// An inclusive byte range, as in HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn length(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// A validated `mirrors` request.
#[derive(Debug, Clone)]
pub struct MirrorSetDecl {
    pub set: String,
    /// Base URLs, each ending in `/`.
    pub urls: Vec<String>,
    pub max_per_mirror: Option<usize>,
}

/// A validated `download` request.
#[derive(Debug, Clone)]
pub struct Download {
    pub id: String,
    pub source: Source,
    pub dest: PathBuf,
    pub size: Option<u64>,
    pub max_size: Option<u64>,
    /// Expected digests as lowercase hex, in the order given.
    pub hashes: Vec<(Algorithm, String)>,
    pub headers: Vec<(String, String)>,
    pub priority: i64,
    pub progress: bool,
    pub resume: bool,
    pub range: Option<ByteRange>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
}

/// A line that could not be accepted: the error, and the `id` if one could be read.
#[derive(Debug)]
pub struct Rejected {
    pub id: Option<String>,
    pub error: FetchError,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum RawRequest {
    Download(Box<RawDownload>),
    Mirrors(RawMirrors),
    Cancel(RawCancel),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirrors {
    set: String,
    urls: Vec<String>,
    max_per_mirror: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDownload {
    id: String,
    url: Option<String>,
    urls: Option<Vec<String>>,
    mirror: Option<String>,
    path: Option<String>,
    dest: String,
    size: Option<u64>,
    max_size: Option<u64>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    progress: bool,
    #[serde(default)]
    resume: bool,
    range: Option<ByteRange>,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCancel {
    id: String,
}

/// Parse and validate one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, Rejected> {
    let reject = |id: Option<String>, message: String| Rejected {
        id,
        error: FetchError::InvalidRequest(message),
    };
    let text = std::str::from_utf8(line).map_err(|_| reject(None, "line is not UTF-8".into()))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| reject(None, format!("not JSON: {e}")))?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(reject(None, "a request must be a JSON object".into()));
    };
    let id = fields.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    fields.retain(|name, _| !name.starts_with("x-"));
    match fields.get("op") {
        None => return Err(reject(id, "missing field `op`".into())),
        Some(serde_json::Value::String(op))
            if op == "download" || op == "cancel" || op == "mirrors" => {}
        Some(op) => {
            return Err(reject(
                id,
                format!("unknown op {op} (known: download, mirrors, cancel)"),
            ))
        }
    }
    let raw: RawRequest = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| reject(id.clone(), e.to_string()))?;
    match raw {
        RawRequest::Download(raw) => validate_download(*raw)
            .map(|d| Request::Download(Box::new(d)))
            .map_err(|error| Rejected { id, error }),
        RawRequest::Mirrors(raw) => validate_mirrors(raw)
            .map(Request::Mirrors)
            .map_err(|error| Rejected { id, error }),
        RawRequest::Cancel(RawCancel { id }) => {
            check_id(&id).map_err(|error| Rejected {
                id: Some(id.clone()),
                error,
            })?;
            Ok(Request::Cancel { id })
        }
    }
}

fn invalid(message: impl Into<String>) -> FetchError {
    FetchError::InvalidRequest(message.into())
}

fn validate_download(raw: RawDownload) -> Result<Download, FetchError> {
    check_id(&raw.id)?;
    let source = match (raw.url, raw.urls, raw.mirror, raw.path) {
        (Some(url), None, None, None) => Source::Urls(vec![url]),
        (None, Some(urls), None, None) if !urls.is_empty() => Source::Urls(urls),
        (None, Some(_), None, None) => return Err(invalid("`urls` must not be empty")),
        (None, None, Some(set), Some(path)) => {
            check_mirror_path(&path)?;
            Source::Mirror {
                set,
                path: path.trim_start_matches('/').to_string(),
            }
        }
        (None, None, Some(_), None) => return Err(invalid("`mirror` needs a `path`")),
        (None, None, None, Some(_)) => return Err(invalid("`path` needs a `mirror`")),
        (None, None, None, None) => {
            return Err(invalid(
                "missing source: give `url`, `urls`, or `mirror` and `path`",
            ))
        }
        _ => {
            return Err(invalid(
                "give exactly one source: `url`, `urls`, or `mirror` + `path`",
            ))
        }
    };
    if let Source::Urls(urls) = &source {
        for url in urls {
            check_url(url)?;
        }
    }
    if let Some(range) = raw.range {
        if range.start > range.end {
            return Err(invalid("`range.start` must not be after `range.end`"));
        }
        if raw.resume {
            return Err(invalid("`range` and `resume` cannot be combined"));
        }
        if raw.size.is_some_and(|size| size != range.length()) {
            return Err(invalid("`size` must equal the length of `range`"));
        }
    }
    for (name, value) in [
        ("if_none_match", &raw.if_none_match),
        ("if_modified_since", &raw.if_modified_since),
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
    let dest = check_dest(&raw.dest)?;
    let mut hashes = Vec::with_capacity(raw.hashes.len());
    for (name, hex) in raw.hashes {
        let algorithm = Algorithm::from_name(&name).ok_or_else(|| {
            invalid(format!(
                "unknown hash algorithm `{name}` (known: sha256, sha512, sha384, sha224, sha1, md5)"
            ))
        })?;
        let hex = hex.to_ascii_lowercase();
        if hex.len() != algorithm.output_len() * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "`{name}` must be {} hex digits",
                algorithm.output_len() * 2
            )));
        }
        hashes.push((algorithm, hex));
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in raw.headers {
        if name.is_empty() || !name.bytes().all(is_header_name_byte) {
            return Err(invalid(format!("bad header name {name:?}")));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(invalid(format!(
                "header {name} has a line break in its value"
            )));
        }
        headers.push((name, value));
    }
    if let (Some(size), Some(max)) = (raw.size, raw.max_size) {
        if size > max {
            return Err(invalid(format!(
                "size {size} is larger than max_size {max}"
            )));
        }
    }
    Ok(Download {
        id: raw.id,
        source,
        dest,
        size: raw.size,
        max_size: raw.max_size,
        hashes,
        headers,
        priority: raw.priority,
        progress: raw.progress,
        resume: raw.resume,
        range: raw.range,
        if_none_match: raw.if_none_match,
        if_modified_since: raw.if_modified_since,
    })
}

fn validate_mirrors(raw: RawMirrors) -> Result<MirrorSetDecl, FetchError> {
    if raw.set.is_empty() || raw.set.chars().any(char::is_control) {
        return Err(invalid("`set` must be a non-empty name"));
    }
    if raw.urls.is_empty() {
        return Err(invalid("a mirror set needs at least one URL"));
    }
    if raw.max_per_mirror == Some(0) {
        return Err(invalid("`max_per_mirror` must be at least 1"));
    }
    let mut urls = Vec::with_capacity(raw.urls.len());
    for url in raw.urls {
        check_url(&url)?;
        let base = if url.ends_with('/') { url } else { url + "/" };
        if !urls.contains(&base) {
            urls.push(base);
        }
    }
    Ok(MirrorSetDecl {
        set: raw.set,
        urls,
        max_per_mirror: raw.max_per_mirror,
    })
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

fn check_id(id: &str) -> Result<(), FetchError> {
    if id.is_empty() || id.len() > 1024 {
        return Err(invalid("`id` must be 1 to 1024 bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid("`id` must not contain control characters"));
    }
    Ok(())
}

/// The scheme of `url`, lowercased, if it has the `scheme://` form.
pub fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme.as_bytes()[0].is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    valid.then(|| scheme.to_ascii_lowercase())
}

fn check_url(url: &str) -> Result<(), FetchError> {
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid(format!(
            "URL {url:?} contains a space or control character (percent-encode it)"
        )));
    }
    let scheme =
        scheme_of(url).ok_or_else(|| invalid(format!("{url:?} is not an absolute URL")))?;
    if !REQUEST_SCHEMES.contains(&scheme.as_str()) {
        return Err(FetchError::UnsupportedScheme(format!(
            "scheme `{scheme}` is not supported (use http, https, ftp or file)"
        )));
    }
    if scheme != "file" && host_key(url).is_none() {
        return Err(invalid(format!("URL {url:?} has no host")));
    }
    Ok(())
}

fn check_dest(dest: &str) -> Result<PathBuf, FetchError> {
    if dest.is_empty() {
        return Err(invalid("`dest` must not be empty"));
    }
    if dest.contains('\0') {
        return Err(invalid("`dest` must not contain NUL"));
    }
    let path = PathBuf::from(dest);
    if dest.ends_with('/') || path.file_name().is_none() {
        return Err(invalid("`dest` must name a file, not a directory"));
    }
    Ok(path)
}

fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The scheduling key of a URL: `scheme://host:port` as written (lowercased), without user
/// info or path. `None` when there is no host. file:// URLs share one key.
pub fn host_key(url: &str) -> Option<String> {
    let scheme = scheme_of(url)?;
    let rest = &url[scheme.len() + 3..];
    if scheme == "file" {
        return Some("file://".to_string());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.is_empty() || host_port.starts_with(':') {
        return None;
    }
    Some(format!("{scheme}://{}", host_port.to_ascii_lowercase()))
}

// ---------------------------------------------------------------------------------------
// Events

/// The `error` object of `failed`, `invalid` and each listed attempt.
#[derive(Serialize, Debug, Clone)]
pub struct ErrorBody {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    pub message: String,
}

impl From<&FetchError> for ErrorBody {
    fn from(err: &FetchError) -> ErrorBody {
        ErrorBody {
            kind: err.kind().as_str(),
            status: err.status(),
            message: err.to_string(),
        }
    }
}

/// One failed attempt, as listed in `failed.attempts`.
#[derive(Serialize, Debug, Clone)]
pub struct AttemptBody {
    pub url: String,
    pub error: ErrorBody,
}

/// `{algorithm: hex}` in a fixed order.
pub struct HashMapBody<'a>(pub &'a [(Algorithm, String)]);

impl Serialize for HashMapBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (algorithm, hex) in self.0 {
            map.serialize_entry(algorithm.name(), hex)?;
        }
        map.end()
    }
}

/// An event line. Borrowed fields keep emission free of copies.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    Hello {
        name: &'a str,
        version: &'a str,
        protocol: u32,
        libcurl: &'a str,
        features: &'a [&'a str],
    },
    Start {
        id: &'a str,
        url: &'a str,
        attempt: u32,
    },
    Progress {
        id: &'a str,
        bytes: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    Done {
        id: &'a str,
        path: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        hashes: Option<HashMapBody<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u32>,
        attempts: u32,
        elapsed_ms: u64,
        cached: bool,
        not_modified: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        etag: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_modified: Option<&'a str>,
    },
    Failed {
        id: &'a str,
        error: ErrorBody,
        attempts: &'a [AttemptBody],
    },
    Invalid {
        line: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        error: ErrorBody,
    },
    Bye {
        ok: u64,
        failed: u64,
        invalid: u64,
        bytes: u64,
        elapsed_ms: u64,
    },
}

impl Event<'_> {
    /// Append this event as one JSON line to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("events always serialize");
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn parse(line: &str) -> Result<Request, Rejected> {
        parse_request(line.as_bytes())
    }

    fn rejected(line: &str) -> Rejected {
        match parse(line) {
            Ok(r) => panic!("accepted {line}: {r:?}"),
            Err(r) => r,
        }
    }

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn accepts_a_full_download() {
        let line = format!(
            r#"{{"op":"download","id":"a","url":"http://h/x","dest":"/tmp/x","size":3,
               "hashes":{{"sha256":"{}"}},"headers":{{"X-A":"1"}},"priority":-2,
               "progress":true,"x-mine":{{"any":1}}}}"#,
            SHA.to_uppercase()
        );
        let Request::Download(d) = parse(&line).unwrap() else {
            panic!()
        };
        assert_eq!(d.source, Source::Urls(vec!["http://h/x".into()]));
        assert_eq!(d.hashes, vec![(Algorithm::Sha256, SHA.to_string())]);
        assert_eq!(d.priority, -2);
        assert!(d.progress);
    }

    #[test]
    fn rejects_typos_but_ignores_x_fields() {
        let r = rejected(r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","szie":1}"#);
        assert_eq!(r.id.as_deref(), Some("a"));
        assert!(r.error.to_string().contains("szie"), "{}", r.error);
    }

    #[test]
    fn rejects_bad_inputs_with_the_id_when_known() {
        for line in [
            "not json",
            "[1,2]",
            r#"{"id":"a"}"#,
            r#"{"op":"frobnicate","id":"a"}"#,
            r#"{"op":"download","id":"a","url":"http://h/x"}"#,
            r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","hashes":{"sha256":"zz"}}"#,
            r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","hashes":{"crc32":"00"}}"#,
            r#"{"op":"download","id":"a","url":"http://h/a b","dest":"/t"}"#,
            "{\"op\":\"download\",\"id\":\"a\",\"url\":\"http://h/\\u0007\",\"dest\":\"/t\"}",
            r#"{"op":"download","id":"a","url":"http://h/x","urls":["http://h/y"],"dest":"/t"}"#,
            r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t/"}"#,
            r#"{"op":"download","id":"","url":"http://h/x","dest":"/t"}"#,
        ] {
            let r = rejected(line);
            assert_eq!(r.error.kind(), ErrorKind::InvalidRequest, "{line}");
        }
    }

    #[test]
    fn mirror_sources_and_sets() {
        let Request::Download(d) = parse(
            r#"{"op":"download","id":"a","mirror":"f","path":"/P/a.rpm","dest":"/t","resume":true}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            d.source,
            Source::Mirror {
                set: "f".into(),
                path: "P/a.rpm".into()
            }
        );
        assert!(d.resume);
        let Request::Mirrors(m) = parse(
            r#"{"op":"mirrors","set":"f","urls":["http://a/x","http://b/y/"],"max_per_mirror":2}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(m.urls, vec!["http://a/x/", "http://b/y/"]);
        for bad in [
            r#"{"op":"download","id":"a","mirror":"f","dest":"/t"}"#,
            r#"{"op":"download","id":"a","url":"http://h/x","mirror":"f","path":"p","dest":"/t"}"#,
            r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","range":{"start":5,"end":1}}"#,
            r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","range":{"start":0,"end":1},"resume":true}"#,
            r#"{"op":"mirrors","set":"f","urls":[]}"#,
            r#"{"op":"mirrors","set":"f","urls":["http://a/"],"max_per_mirror":0}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsupported_scheme_has_its_own_kind() {
        let r = rejected(r#"{"op":"download","id":"a","url":"gopher://h/x","dest":"/t"}"#);
        assert_eq!(r.error.kind(), ErrorKind::UnsupportedScheme);
    }

    #[test]
    fn host_keys() {
        assert_eq!(
            host_key("http://User@Example.COM:8080/a?b").as_deref(),
            Some("http://example.com:8080")
        );
        assert_eq!(host_key("https://h").as_deref(), Some("https://h"));
        assert_eq!(host_key("http:///x"), None);
        assert_eq!(host_key("file:///etc/passwd").as_deref(), Some("file://"));
    }

    #[test]
    fn events_serialize_with_their_tag() {
        let mut out = Vec::new();
        Event::Bye {
            ok: 1,
            failed: 2,
            invalid: 0,
            bytes: 3,
            elapsed_ms: 4,
        }
        .write_line(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"event\":\"bye\",\"ok\":1,\"failed\":2,\"invalid\":0,\"bytes\":3,\"elapsed_ms\":4}\n"
        );
    }
}
