//! The JSON Lines protocol (docs/protocol.md): one request object per line of stdin, one
//! event object per line of stdout. The default front.
//!
//! Parsing is strict: an unknown field is an error (a typo must not silently change what gets
//! downloaded), except fields starting with `x-`, which are the client's own bookkeeping and
//! are ignored. A key given twice is an error too, at the top level and in `hashes` and
//! `headers` (header names compared without ASCII case): JSON parsers disagree on which of two
//! values counts, and the file written must not depend on that (`strict` reads the line
//! straight from its text for this; `serde_json::Value` would keep the last value silently).
//! A line that cannot be accepted is answered with one `invalid` event naming
//! its line number; the engine's own refusals come back with the line number as their ticket.
//! docs/protocol.schema.json describes every event written here, and the integration tests
//! hold real output against it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use crate::api::{self, About, Attempt, Event, Outcome, Request, Source, Stop, Summary};
use crate::body::digest::Algorithm;
use crate::error::FetchError;
use crate::front::{Front, Io, Line};
use crate::io::stdin::MAX_LINE;
use crate::net::url::{redacted, redacted_string};

/// Version of the protocol this front speaks (sent in `hello`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The JSON Lines front: counts outcomes for `bye` and the exit status.
#[derive(Default)]
pub struct JsonLines {
    ok: u64,
    failed: u64,
    invalid: u64,
}

impl Front for JsonLines {
    fn start(&mut self, about: &About<'_>, io: &mut Io<'_>) {
        let mut features = Vec::new();
        if about.http2 {
            features.push("http2");
        }
        features.extend(Algorithm::ALL.map(|a| a.name()));
        features.extend([
            "urls",
            "mirrors",
            "retry",
            "resume",
            "range",
            "conditional",
            "cancel",
            "priority",
            "progress",
            "cached",
            "auth",
            "tls",
            "proxy",
            "timeout",
            "max_speed",
        ]);
        write_line(
            io.stdout(),
            &Wire::Hello {
                name: "fetchmux",
                version: about.version,
                protocol: PROTOCOL_VERSION,
                libcurl: about.libcurl,
                features: &features,
                insecure: about.insecure.then_some(true),
            },
        );
    }

    fn input(&mut self, line: Line<'_>, io: &mut Io<'_>) {
        let (line_no, parsed) = match line {
            Line::Text(_, text) if text.iter().all(u8::is_ascii_whitespace) => return,
            Line::Text(no, text) => (no, parse_request(text)),
            Line::TooLong(no) => (
                no,
                Err(Rejected {
                    id: None,
                    error: FetchError::InvalidRequest(format!(
                        "line is longer than {MAX_LINE} bytes"
                    )),
                }),
            ),
        };
        match parsed {
            Ok(request) => io.submit(line_no, request),
            Err(rejected) => self.invalid(line_no, rejected.id.as_deref(), &rejected.error, io),
        }
    }

    fn event(&mut self, event: &Event<'_>, io: &mut Io<'_>) {
        let out = io.stdout();
        match *event {
            Event::Started { id, url, attempt } => {
                let url = redacted(url);
                write_line(out, &Wire::Start { id, url, attempt })
            }
            Event::Progress { id, bytes, total } => {
                write_line(out, &Wire::Progress { id, bytes, total })
            }
            Event::Done {
                id,
                dest,
                ref outcome,
                attempts,
                elapsed,
            } => {
                self.ok += 1;
                write_line(
                    out,
                    &done(id, &dest.to_string_lossy(), outcome, attempts, elapsed),
                );
            }
            Event::Failed {
                id,
                error,
                attempts,
            } => {
                self.failed += 1;
                let failed = Wire::Failed {
                    id,
                    error: ErrorBody::from(error),
                    attempts: AttemptsBody(attempts),
                };
                write_line(out, &failed);
            }
            Event::MirrorAside {
                url,
                failures,
                for_,
            } => write_line(
                out,
                &Wire::Mirror {
                    url: redacted(url),
                    state: "aside",
                    failures: Some(failures),
                    back_in_ms: Some(for_.as_millis() as u64),
                },
            ),
            Event::MirrorBack { url } => write_line(
                out,
                &Wire::Mirror {
                    url: redacted(url),
                    state: "back",
                    failures: None,
                    back_in_ms: None,
                },
            ),
            Event::Refused { ticket, id, error } => self.invalid(ticket, id, error, io),
        }
    }

    fn finish(&mut self, summary: &Summary, io: &mut Io<'_>) -> i32 {
        let bye = Wire::Bye {
            ok: self.ok,
            failed: self.failed,
            invalid: self.invalid,
            bytes: summary.bytes,
            elapsed_ms: summary.elapsed.as_millis() as u64,
        };
        write_line(io.stdout(), &bye);
        match summary.stop {
            Some(Stop::Signal(signal)) => 128 + signal,
            Some(Stop::OutputClosed) => 1,
            None if self.failed + self.invalid > 0 => 1,
            None => 0,
        }
    }
}

impl JsonLines {
    fn invalid(&mut self, line: u64, id: Option<&str>, error: &FetchError, io: &mut Io<'_>) {
        self.invalid += 1;
        let invalid = Wire::Invalid {
            line,
            id,
            error: ErrorBody::from(error),
        };
        write_line(io.stdout(), &invalid);
    }
}

fn done<'a>(
    id: &'a str,
    path: &'a str,
    outcome: &'a Outcome<'a>,
    attempts: &'a [Attempt],
    elapsed: std::time::Duration,
) -> Wire<'a> {
    let (url, status, verified, etag, last_modified) = match *outcome {
        Outcome::Fetched {
            url,
            status,
            size,
            hashes,
            etag,
            last_modified,
        } => (Some(url), status, Some((size, hashes)), etag, last_modified),
        Outcome::Cached { size, hashes } => (None, None, Some((size, hashes)), None, None),
        Outcome::NotModified {
            url,
            status,
            etag,
            last_modified,
        } => (Some(url), status, None, etag, last_modified),
    };
    let cached = matches!(outcome, Outcome::Cached { .. });
    Wire::Done {
        id,
        path,
        url: url.map(redacted),
        size: verified.map(|(size, _)| size),
        hashes: verified.map(|(_, hashes)| HashMapBody(hashes)),
        status,
        // The attempt that succeeded counts too, unless nothing was fetched.
        attempts: attempts.len() as u32 + u32::from(!cached),
        failures: (!attempts.is_empty()).then_some(AttemptsBody(attempts)),
        elapsed_ms: elapsed.as_millis() as u64,
        cached,
        not_modified: matches!(outcome, Outcome::NotModified { .. }),
        etag,
        last_modified,
    }
}

// ---------------------------------------------------------------------------------------
// Requests

/// A line that could not be accepted: the error, and the `id` if one could be read.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub id: Option<String>,
    pub error: FetchError,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirrors {
    set: String,
    urls: Vec<String>,
    max_per_mirror: Option<usize>,
    auth: Option<RawAuth>,
    proxy: Option<String>,
    tls: Option<RawTls>,
}

/// `"auth":{"user":…,"password":…}`: never echoed in any event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    user: String,
    password: String,
}

impl From<RawAuth> for api::Credentials {
    fn from(raw: RawAuth) -> api::Credentials {
        api::Credentials {
            user: raw.user,
            password: raw.password,
        }
    }
}

/// A mirror set's `tls` object (docs/protocol.md): curl's option names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    ca_path: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    key_password_file: Option<String>,
    #[serde(default)]
    insecure: bool,
}

/// The typed settings of a set's `tls`; the passphrase is read now, as the command line's
/// is at start (the other files are checked by the engine's validation).
fn tls(raw: RawTls) -> Result<api::Tls, FetchError> {
    let key_password = match raw.key_password_file {
        Some(file) => Some(
            crate::config::read_secret(&file)
                .map_err(|e| invalid(&format!("`tls.key_password_file`: {e}")))?
                .expose()
                .to_string(),
        ),
        None => None,
    };
    Ok(api::Tls {
        ca_file: raw.ca_file,
        ca_path: raw.ca_path,
        cert: raw.cert,
        key: raw.key,
        key_password,
        verify_peer: !raw.insecure,
        verify_host: !raw.insecure,
        ..api::Tls::default()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: u64,
    end: u64,
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
    #[serde(default, deserialize_with = "strict::distinct_keys")]
    hashes: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "strict::distinct_header_names")]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    headers_follow_redirects: bool,
    auth: Option<RawAuth>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    progress: bool,
    #[serde(default)]
    resume: bool,
    range: Option<RawRange>,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    timeout: Option<f64>,
    max_speed: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCancel {
    id: String,
}

/// Parse one request line (without its newline) into a typed request; the engine
/// validates what it says.
pub(crate) fn parse_request(line: &[u8]) -> Result<Request, Rejected> {
    let reject = |id: Option<String>, message: String| Rejected {
        id,
        error: FetchError::InvalidRequest(message),
    };
    let text = std::str::from_utf8(line).map_err(|_| reject(None, "line is not UTF-8".into()))?;
    // Straight from the text, never through `serde_json::Value`, which keeps the last of two
    // equal keys (see `strict`).
    let members = strict::Members::parse(text).map_err(|e| {
        let message = match e.classify() {
            serde_json::error::Category::Data => "a request must be a JSON object".into(),
            _ => format!("not JSON: {e}"),
        };
        reject(None, message)
    })?;
    let repeated = members.repeated();
    // The id is echoed in any refusal, unless it is the key given twice: then there is no one
    // id to echo.
    let id = match repeated {
        Some("id") => None,
        _ => members
            .get("id")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()),
    };
    if let Some(key) = repeated {
        return Err(reject(id, format!("duplicate field `{key}`")));
    }
    let Some(op) = members.get("op") else {
        return Err(reject(id, "missing field `op`".into()));
    };
    // `op` picks the shape; `x-` members are the client's own and ignored.
    let fields = |key: &str| key != "op" && !key.starts_with("x-");
    let named = |e: serde_json::Error| reject(id.clone(), e.to_string());
    match serde_json::from_str::<String>(op.get()).ok().as_deref() {
        Some("download") => members
            .deserialize::<RawDownload>(fields)
            .map_err(named)
            .and_then(|raw| {
                download(raw).map_err(|error| Rejected {
                    id: id.clone(),
                    error,
                })
            })
            .map(Request::from),
        Some("mirrors") => members
            .deserialize::<RawMirrors>(fields)
            .map_err(named)
            .and_then(|raw| {
                let tls = raw
                    .tls
                    .map(tls)
                    .transpose()
                    .map_err(|error| Rejected { id: None, error })?;
                Ok(Request::Mirrors(api::MirrorSet {
                    set: raw.set,
                    urls: raw.urls,
                    max_per_mirror: raw.max_per_mirror,
                    auth: raw.auth.map(Into::into),
                    route: api::Route {
                        proxy: raw.proxy,
                        tls: tls.map(Box::new),
                    },
                }))
            }),
        Some("cancel") => members
            .deserialize::<RawCancel>(fields)
            .map_err(named)
            .map(|RawCancel { id }| Request::Cancel { id }),
        _ => Err(reject(
            id.clone(),
            format!(
                "unknown `op` {} (known: download, mirrors, cancel)",
                op.get()
            ),
        )),
    }
}

fn invalid(message: &str) -> FetchError {
    FetchError::InvalidRequest(message.to_string())
}

/// The typed download a line describes (the engine validates it further).
fn download(raw: RawDownload) -> Result<api::Download, FetchError> {
    // The engine checks the id again; checking it here first keeps a bad id reported before
    // a bad source, as it always was.
    api::check_id(&raw.id)?;
    let url_field = raw.url.is_some();
    let source = match (raw.url, raw.urls, raw.mirror, raw.path) {
        (Some(url), None, None, None) => Source::Urls(vec![url]),
        (None, Some(urls), None, None) => Source::Urls(urls),
        (None, None, Some(set), Some(path)) => Source::Mirror { set, path },
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
    // The engine checks URLs again, but names a lone URL `url` and several `urls`; here the
    // message can name the field the line used.
    if let Source::Urls(urls) = &source {
        let field = if url_field { "url" } else { "urls" };
        urls.iter().try_for_each(|url| api::check_url(url, field))?;
    }
    let mut hashes = Vec::with_capacity(raw.hashes.len());
    for (name, hex) in raw.hashes {
        let algorithm = Algorithm::from_name(&name).ok_or_else(|| {
            FetchError::InvalidRequest(format!(
                "`hashes`: unknown hash algorithm `{name}` (known: sha256, sha512, sha384, sha224, sha1, md5)"
            ))
        })?;
        hashes.push((algorithm, hex));
    }
    let transport = transport(raw.timeout, raw.max_speed)?;
    Ok(api::Download {
        id: raw.id,
        source,
        dest: PathBuf::from(raw.dest),
        size: raw.size,
        max_size: raw.max_size,
        hashes,
        headers: raw.headers.into_iter().collect(),
        headers_follow_redirects: raw.headers_follow_redirects,
        auth: raw.auth.map(|raw| Box::new(raw.into())),
        priority: raw.priority,
        progress: raw.progress,
        resume: raw.resume,
        range: raw.range.map(|r| api::ByteRange {
            start: r.start,
            end: r.end,
        }),
        if_none_match: raw.if_none_match,
        if_modified_since: raw.if_modified_since,
        transport,
        ..api::Download::new(String::new(), api::Source::Urls(Vec::new()), PathBuf::new())
    })
}

/// A request's own `timeout` (seconds, for the whole download) and `max_speed` (bytes a
/// second), over `--max-time` and the helper-wide pace; 0 means "no limit" for either.
fn transport(
    timeout: Option<f64>,
    max_speed: Option<u64>,
) -> Result<Option<Box<api::Transport>>, FetchError> {
    let max_time = match timeout {
        None => None,
        Some(secs) if secs.is_finite() && (0.0..=1e9).contains(&secs) => {
            Some(std::time::Duration::from_secs_f64(secs))
        }
        Some(secs) => {
            return Err(FetchError::InvalidRequest(format!(
                "`timeout`: {secs} is not a number of seconds from 0 to 1e9 (0: no limit)"
            )))
        }
    };
    if max_time.is_none() && max_speed.is_none() {
        return Ok(None);
    }
    Ok(Some(Box::new(api::Transport {
        max_time,
        max_speed,
        ..api::Transport::default()
    })))
}

// ---------------------------------------------------------------------------------------
// Events

/// The `error` object of `failed`, `invalid` and each listed attempt.
#[derive(Serialize, Debug, Clone)]
struct ErrorBody {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u32>,
    message: String,
}

impl From<&FetchError> for ErrorBody {
    fn from(err: &FetchError) -> ErrorBody {
        ErrorBody {
            kind: err.kind().as_str(),
            status: err.status(),
            message: redacted_string(err.to_string()),
        }
    }
}

/// `failed.attempts` and `done.failures`: `[{url, error}]`.
struct AttemptsBody<'a>(&'a [Attempt]);

impl Serialize for AttemptsBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct One<'a> {
            url: Cow<'a, str>,
            error: ErrorBody,
        }
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for attempt in self.0 {
            seq.serialize_element(&One {
                url: redacted(&attempt.url),
                error: ErrorBody::from(&attempt.error),
            })?;
        }
        seq.end()
    }
}

/// `{algorithm: hex}` in a fixed order.
struct HashMapBody<'a>(&'a [(Algorithm, String)]);

impl Serialize for HashMapBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (algorithm, hex) in self.0 {
            map.serialize_entry(algorithm.name(), hex)?;
        }
        map.end()
    }
}

/// An event line as it goes on the wire.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Wire<'a> {
    Hello {
        name: &'a str,
        version: &'a str,
        protocol: u32,
        libcurl: &'a str,
        features: &'a [&'a str],
        #[serde(skip_serializing_if = "Option::is_none")]
        insecure: Option<bool>,
    },
    Start {
        id: &'a str,
        url: Cow<'a, str>,
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
        url: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        hashes: Option<HashMapBody<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u32>,
        attempts: u32,
        /// The attempts that failed before the one that succeeded.
        #[serde(skip_serializing_if = "Option::is_none")]
        failures: Option<AttemptsBody<'a>>,
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
        attempts: AttemptsBody<'a>,
    },
    /// A mirror put aside (`aside`) or chosen again (`back`).
    Mirror {
        url: Cow<'a, str>,
        state: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        failures: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        back_in_ms: Option<u64>,
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

/// Append `event` as one JSON line to `out`.
fn write_line(out: &mut Vec<u8>, event: &Wire<'_>) {
    serde_json::to_writer(&mut *out, event).expect("events always serialize");
    out.push(b'\n');
}

#[cfg(test)]
mod fuzz;
mod strict;
#[cfg(test)]
mod tests;
