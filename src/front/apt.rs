//! apt's acquire-method protocol (the `http` and `https` methods): `600 URI Acquire`
//! messages in, `200 URI Start` / `201 URI Done` / `400 URI Failure` answers out, matched
//! by URI (docs/fronts.md; the wire facts are from apt 2.6.1, which the tests run).
//!
//! This file owns the conversation: the capabilities, turning a `600` into an
//! [`api::Download`] and the engine's events into answers. Framing is in `message.rs`, the
//! `601 Configuration` and what it means for a request in `settings.rs`.
//!
//! Every `600` apt has outstanding (up to `Acquire::Max-Pipeline-Depth`, 10) runs at once
//! over the engine, and each is answered when it ends, in any order: apt finds the item by
//! the answer's `URI`, which is therefore echoed byte for byte.

mod message;
mod sandbox;
mod settings;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use crate::api::{self, About, Event, Outcome, Request, Source, Summary, Ticket};
use crate::body::digest::Algorithm;
use crate::config::Options;
use crate::error::{Disposition, FetchError};
use crate::front::{Front, Io, Line};
use crate::http_date;
use crate::net::url::redacted_string;
use message::{Message, Reader, Reply};
use settings::Settings;

/// apt's hash names, as in `Expected-<name>` and `<name>-Hash`, for the algorithms both
/// know.
const HASH_NAMES: [(Algorithm, &str); 4] = [
    (Algorithm::Sha512, "SHA512"),
    (Algorithm::Sha256, "SHA256"),
    (Algorithm::Sha1, "SHA1"),
    (Algorithm::Md5, "MD5Sum"),
];

/// The helper-wide settings of this front: no retries, since apt retries transient failures
/// itself (`Acquire::Retries`, with its own delays) and must see each one, marked
/// `Transient-Failure`.
pub fn options(mut options: Options) -> Options {
    options.retries = 0;
    options
}

/// The apt method front.
#[derive(Default)]
pub struct Apt {
    reader: Reader,
    settings: Settings,
    /// The items the engine has, by URI (which is also the download's id).
    items: HashMap<String, Item>,
    /// `600`s for a URI already in flight, submitted in turn when it is answered. apt
    /// merges equal URIs into one item, so this is a safety net, not a path it takes.
    waiting: HashMap<String, VecDeque<(Item, api::Download)>>,
    next_ticket: Ticket,
    /// Why root could not be given up for apt's sandbox user, if it could not.
    sandbox_failure: Option<String>,
}

/// What the answers to one `600` need to know.
#[derive(Debug)]
struct Item {
    ticket: Ticket,
    /// `Filename`, echoed in `201`.
    filename: String,
    /// `Expected-Checksum-FileSize`: exceeding it is a hash mismatch to apt, not
    /// `Maximum-Size`.
    expected_size: Option<u64>,
    /// The `Last-Modified` apt sent (for an IMS hit the server may not repeat it).
    if_modified_since: Option<String>,
    /// `200 URI Start` has been sent.
    started: bool,
}

impl Front for Apt {
    fn start(&mut self, _about: &About<'_>, io: &mut Io<'_>) {
        // What the stock http method of apt 2.6.1 announces: items are pipelined to us (we
        // run them all at once), and apt is to send its configuration and encoded URIs.
        Reply::new("100 Capabilities")
            .field("Version", "1.2")
            .field("Pipeline", "true")
            .field("Send-Config", "true")
            .field("Send-URI-Encoded", "true")
            .send(io.stdout());
    }

    fn input(&mut self, line: Line<'_>, io: &mut Io<'_>) {
        let message = match line {
            Line::Text(_, text) => self.reader.line(text),
            Line::TooLong(_) => {
                self.reader.too_long();
                None
            }
        };
        match message {
            None => {}
            Some(Ok(message)) => self.on_message(&message, io),
            Some(Err(why)) => general_failure(&format!("unreadable message: {why}"), io),
        }
    }

    fn event(&mut self, event: &Event<'_>, io: &mut Io<'_>) {
        match *event {
            // An attempt that began may yet fail, or be an IMS hit: apt takes a Start as
            // "Get:", so the Start waits for the first bytes of the body.
            // Neither protocol has a word for these.
            Event::Started { .. } | Event::MirrorAside { .. } | Event::MirrorBack { .. } => {}
            Event::Progress { id, total, .. } => self.on_progress(id, total, io),
            Event::Done {
                id, ref outcome, ..
            } => self.on_done(id, outcome, io),
            Event::Failed { id, error, .. } => {
                if let Some(item) = self.items.remove(id) {
                    failure_reply(id, error, item.expected_size.is_some()).send(io.stdout());
                    self.next_waiting(id, io);
                }
            }
            Event::Refused { ticket, error, .. } => self.on_refused(ticket, error, io),
        }
    }

    fn finish(&mut self, _summary: &Summary, _io: &mut Io<'_>) -> i32 {
        // apt ends a method by closing its pipes and sending SIGINT (the capability probe
        // at once); every item has had its own answer, so the process's status says
        // nothing more and is always success.
        0
    }
}

impl Apt {
    fn on_message(&mut self, message: &Message, io: &mut Io<'_>) {
        match message.code {
            600 => self.acquire(message, io),
            601 => {
                self.settings.configure(message);
                self.enter_sandbox(io);
            }
            // Other apt → method messages (603 Media Changed) do not concern http.
            _ => {}
        }
    }

    /// Give up root for `APT::Sandbox::User` once the configuration is known; if that
    /// fails, nothing is downloaded (as root or otherwise) and every item says why.
    fn enter_sandbox(&mut self, io: &mut Io<'_>) {
        let user = self.settings.sandbox_user().unwrap_or("");
        if let Err(why) = sandbox::drop_to(user) {
            general_failure(&why, io);
            self.sandbox_failure = Some(why);
        }
    }

    /// `600 URI Acquire`: submit the download, or answer at once why it cannot be made.
    fn acquire(&mut self, message: &Message, io: &mut Io<'_>) {
        let Some(uri) = message.field("URI").filter(|uri| !uri.is_empty()) else {
            return general_failure("600 URI Acquire without a URI", io);
        };
        if let Some(why) = &self.sandbox_failure {
            return Reply::new("400 URI Failure")
                .field("URI", uri)
                .field("Message", why)
                .send(io.stdout());
        }
        let Some(filename) = message.field("Filename").filter(|f| !f.is_empty()) else {
            return Reply::new("400 URI Failure")
                .field("URI", uri)
                .field("Message", "600 URI Acquire without a Filename")
                .send(io.stdout());
        };
        let (item, download) = self.download(uri, filename, message);
        if self.items.contains_key(uri) {
            let queue = self.waiting.entry(uri.to_string()).or_default();
            queue.push_back((item, download));
        } else {
            self.submit(item, download, io);
        }
    }

    /// The item and the download a `600` asks for.
    fn download(&mut self, uri: &str, filename: &str, message: &Message) -> (Item, api::Download) {
        self.next_ticket += 1;
        let mut download = api::Download::new(
            uri,
            Source::Urls(vec![request_url(uri)]),
            PathBuf::from(filename),
        );
        download.hashes = expected_hashes(message);
        download.size = number(message, "Expected-Checksum-FileSize");
        download.max_size = number(message, "Maximum-Size");
        if message.flag("Index-File") {
            download.if_modified_since = message.field("Last-Modified").map(str::to_string);
        }
        // apt leaves a partial download at Filename, to be continued; and apt dates its
        // list files by their server's Last-Modified for the next If-Modified-Since.
        download.continue_dest = true;
        download.server_mtime = true;
        // An IMS hit means apt's own copy (in lists/, not at Filename) is current.
        download.not_modified_needs_dest = false;
        // The first progress report says that the body is coming (see `event`).
        download.progress = true;
        let settings = self.settings.for_request(uri, message.field("Proxy"));
        download.headers = settings.headers;
        download.transport = settings.transport.map(Box::new);
        let item = Item {
            ticket: self.next_ticket,
            filename: filename.to_string(),
            expected_size: download.size,
            if_modified_since: download.if_modified_since.clone(),
            started: false,
        };
        (item, download)
    }

    fn submit(&mut self, item: Item, download: api::Download, io: &mut Io<'_>) {
        let uri = download.id.clone();
        io.submit(item.ticket, Request::from(download));
        self.items.insert(uri, item);
    }

    /// `uri` has been answered: its next `600`, if one waits, goes to the engine.
    fn next_waiting(&mut self, uri: &str, io: &mut Io<'_>) {
        let Some(queue) = self.waiting.get_mut(uri) else {
            return;
        };
        let next = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(uri);
        }
        if let Some((item, download)) = next {
            self.submit(item, download, io);
        }
    }

    /// The body is arriving: `200 URI Start` with its size, once. (A body too quick for
    /// the first progress report gets its Start with its Done.)
    fn on_progress(&mut self, uri: &str, total: Option<u64>, io: &mut Io<'_>) {
        if let Some(item) = self.items.get_mut(uri).filter(|item| !item.started) {
            start_reply(uri, item, total).send(io.stdout());
        }
    }

    fn on_done(&mut self, uri: &str, outcome: &Outcome<'_>, io: &mut Io<'_>) {
        let Some(mut item) = self.items.remove(uri) else {
            return;
        };
        let modified = !matches!(outcome, Outcome::NotModified { .. });
        if !item.started && modified {
            // The body came before its first progress report, or nothing was fetched (the
            // file at `Filename` was already whole): the stock method also answers Start,
            // then Done.
            start_reply(uri, &mut item, outcome_size(outcome)).send(io.stdout());
        }
        done_reply(uri, &item, outcome).send(io.stdout());
        self.next_waiting(uri, io);
    }

    /// The engine would not take a download (an invalid URL, say): a failure for its URI.
    fn on_refused(&mut self, ticket: Ticket, error: &FetchError, io: &mut Io<'_>) {
        let uri = self
            .items
            .iter()
            .find(|(_, item)| item.ticket == ticket)
            .map(|(uri, _)| uri.clone());
        if let Some(uri) = uri {
            self.items.remove(&uri);
            Reply::new("400 URI Failure")
                .field("URI", &uri)
                .field("Message", redacted_string(error.to_string()))
                .send(io.stdout());
            self.next_waiting(&uri, io);
        }
    }
}

/// `401 General Failure`: apt reports it and stops the method.
fn general_failure(why: &str, io: &mut Io<'_>) {
    Reply::new("401 General Failure")
        .field("Message", why)
        .send(io.stdout());
}

/// The URL curl gets for apt's URI. apt sends URIs encoded (`Send-URI-Encoded`), but a byte
/// that is not allowed in a request URL (a space, a control or non-ASCII byte from an apt
/// that does not) is percent-encoded rather than refused; the item keeps apt's URI.
fn request_url(uri: &str) -> String {
    let mut url = String::with_capacity(uri.len());
    for byte in uri.bytes() {
        if byte <= b' ' || byte >= 0x7f {
            url.push_str(&format!("%{byte:02X}"));
        } else {
            url.push(char::from(byte));
        }
    }
    url
}

/// `Expected-SHA512`, `-SHA256`, `-SHA1`, `-MD5Sum` (others, such as
/// `Expected-Checksum-FileSize`, are not digests).
fn expected_hashes(message: &Message) -> Vec<(Algorithm, String)> {
    HASH_NAMES
        .iter()
        .filter_map(|&(algorithm, name)| {
            let hex = message.field(&format!("Expected-{name}"))?;
            Some((algorithm, hex.to_string()))
        })
        .collect()
}

fn number(message: &Message, field: &str) -> Option<u64> {
    message.field(field).and_then(|v| v.trim().parse().ok())
}

/// `200 URI Start`, marking the item started.
fn start_reply(uri: &str, item: &mut Item, size: Option<u64>) -> Reply {
    item.started = true;
    Reply::new("200 URI Start")
        .field("URI", uri)
        .maybe("Size", size)
}

fn outcome_size(outcome: &Outcome<'_>) -> Option<u64> {
    match *outcome {
        Outcome::Fetched { size, .. } | Outcome::Cached { size, .. } => Some(size),
        Outcome::NotModified { .. } => None,
    }
}

/// `201 URI Done` for an outcome: the file's size, its digests in apt's names and its date;
/// or, when the server said it has not changed, `IMS-Hit`.
fn done_reply(uri: &str, item: &Item, outcome: &Outcome<'_>) -> Reply {
    let reply = Reply::new("201 URI Done")
        .field("URI", uri)
        .field("Filename", &item.filename);
    match *outcome {
        Outcome::Fetched {
            size,
            hashes,
            last_modified,
            ..
        } => hash_fields(reply.field("Size", size), size, hashes)
            .maybe("Last-Modified", last_modified.and_then(rfc1123)),
        Outcome::Cached { size, hashes } => {
            hash_fields(reply.field("Size", size), size, hashes).field("Resume-Point", size)
        }
        Outcome::NotModified { last_modified, .. } => reply.field("IMS-Hit", "true").maybe(
            "Last-Modified",
            last_modified
                .and_then(rfc1123)
                .or(item.if_modified_since.clone()),
        ),
    }
}

/// The server's `Last-Modified` in the one form apt parses (RFC 1123), whichever of HTTP's
/// date forms it came in.
fn rfc1123(date: &str) -> Option<String> {
    http_date::parse(date).map(http_date::format)
}

/// One `<Type>-Hash` per digest the engine verified or computed, plus the size as apt's
/// pseudo-hash. apt compares the types both sides have, and hashes the file itself when a
/// type it expects is missing.
fn hash_fields(mut reply: Reply, size: u64, hashes: &[(Algorithm, String)]) -> Reply {
    for (algorithm, hex) in hashes {
        if let Some(&(_, name)) = HASH_NAMES.iter().find(|(a, _)| a == algorithm) {
            reply = reply.field(&format!("{name}-Hash"), hex);
            if *algorithm == Algorithm::Md5 {
                // The legacy alias the stock method still sends.
                reply = reply.field("MD5-Hash", hex);
            }
        }
    }
    reply.field("Checksum-FileSize-Hash", size)
}

/// `400 URI Failure` with apt's `FailReason` and, for failures worth another try,
/// `Transient-Failure` (apt retries those `Acquire::Retries` times).
fn failure_reply(uri: &str, error: &FetchError, sized: bool) -> Reply {
    let reply = Reply::new("400 URI Failure")
        .field("URI", uri)
        // apt's URI is apt's own to show; our words must not carry a password.
        .field("Message", redacted_string(error.to_string()))
        .maybe("FailReason", fail_reason(error, sized))
        .maybe(
            "Transient-Failure",
            (error.disposition() == Disposition::Transient).then_some("true"),
        );
    received_hash(reply, error)
}

/// For a mismatch, what was received, in the `<Type>-Hash` field apt lists under "Hashes of
/// received file" beside the expected ones.
fn received_hash(reply: Reply, error: &FetchError) -> Reply {
    match error {
        FetchError::ChecksumMismatch {
            algorithm, actual, ..
        } => {
            let name = Algorithm::from_name(algorithm)
                .and_then(|a| HASH_NAMES.iter().find(|(known, _)| *known == a))
                .map(|(_, name)| format!("{name}-Hash"));
            match name {
                Some(name) => reply.field(&name, actual),
                None => reply,
            }
        }
        FetchError::SizeMismatch { actual, .. } => reply.field("Checksum-FileSize-Hash", actual),
        _ => reply,
    }
}

/// The `FailReason` apt knows for `error` (`acquire-worker.cc`, `acquire-item.cc`);
/// `sized`: the request carried apt's expected size, so a body beyond it is a mismatch.
fn fail_reason(error: &FetchError, sized: bool) -> Option<String> {
    let reason = match error {
        FetchError::Timeout(_) | FetchError::TooSlow(_) => "Timeout",
        FetchError::Connect(_) => "ConnectionRefused",
        FetchError::Dns(_) => "ResolveFailure",
        FetchError::HttpStatus { status } => return Some(format!("HttpError{status}")),
        FetchError::TooManyRedirects(_) => "RedirectionLoop",
        FetchError::ChecksumMismatch { .. } | FetchError::SizeMismatch { .. } => "HashSumMismatch",
        FetchError::TooLarge { .. } if sized => "HashSumMismatch",
        FetchError::TooLarge { .. } => "MaximumSizeExceeded",
        _ => return None,
    };
    Some(reason.to_string())
}

#[cfg(test)]
mod tests;
