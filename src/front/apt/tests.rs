//! The apt front: framing, configuration, `600` → download, events → answers.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::api::{LowSpeed, Transport};
use crate::error::FetchError;

const SHA256: &str = "fda8403af1d56ed410647c5f8517a0132f4bec8624080699f0a74923f3f6af9f";
const MD5: &str = "abb51073616a05949473ed9951db28c4";

/// A front with its output and submissions, fed text as apt writes it.
#[derive(Default)]
struct Harness {
    front: Apt,
    out: Vec<u8>,
    submitted: Vec<(Ticket, Request)>,
    line_no: u64,
}

impl Harness {
    fn started() -> Harness {
        let mut h = Harness::default();
        let about = About {
            version: "0",
            libcurl: "0",
            http2: false,
            insecure: false,
        };
        h.front
            .start(&about, &mut Io::new(&mut h.out, &mut h.submitted));
        h
    }

    /// Feed `text` line by line, as the engine's line splitter would (without `\n` and a
    /// trailing `\r`).
    fn feed(&mut self, text: &str) {
        for line in text.split('\n') {
            self.line_no += 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            let mut io = Io::new(&mut self.out, &mut self.submitted);
            self.front
                .input(Line::Text(self.line_no, line.as_bytes()), &mut io);
        }
    }

    fn event(&mut self, event: Event<'_>) {
        let mut io = Io::new(&mut self.out, &mut self.submitted);
        self.front.event(&event, &mut io);
    }

    /// Everything written since the last call, as messages.
    fn replies(&mut self) -> Vec<Message> {
        let text = String::from_utf8(std::mem::take(&mut self.out)).unwrap();
        assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
        let mut reader = Reader::default();
        let mut messages = Vec::new();
        for line in text.split('\n') {
            if let Some(message) = reader.line(line.as_bytes()) {
                messages.push(message.unwrap());
            }
        }
        messages
    }

    fn downloads(&mut self) -> Vec<(Ticket, api::Download)> {
        std::mem::take(&mut self.submitted)
            .into_iter()
            .map(|(ticket, request)| match request {
                Request::Download(d) => (ticket, *d),
                other => panic!("submitted {other:?}"),
            })
            .collect()
    }
}

fn acquire(uri: &str, extra: &str) -> String {
    format!("600 URI Acquire\nURI: {uri}\nFilename: /tmp/partial/x.deb\n{extra}\n")
}

fn fields(message: &Message) -> Vec<(String, String)> {
    message.all().to_vec()
}

#[test]
fn announces_what_the_stock_method_does() {
    let mut h = Harness::started();
    let replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].code, 100);
    for (name, value) in [
        ("Version", "1.2"),
        ("Pipeline", "true"),
        ("Send-Config", "true"),
        ("Send-URI-Encoded", "true"),
    ] {
        assert_eq!(replies[0].field(name), Some(value), "{name}");
    }
}

#[test]
fn framing_ignores_case_joins_continuations_and_tolerates_cr() {
    let mut reader = Reader::default();
    let mut got = None;
    for line in [
        "",
        "600 URI Acquire",
        "uri: http://h/a",
        "X-Long: one",
        " two",
        " .",
        "",
    ] {
        if let Some(message) = reader.line(line.as_bytes()) {
            got = Some(message.unwrap());
        }
    }
    let message = got.expect("a blank line ends the message");
    assert_eq!(message.code, 600);
    assert_eq!(message.field("URI"), Some("http://h/a"));
    assert_eq!(message.field("x-long"), Some("one\ntwo\n"));

    let mut h = Harness::started();
    h.replies();
    h.feed(&acquire("http://h/a", "").replace('\n', "\r\n"));
    assert_eq!(h.downloads().len(), 1);
}

#[test]
fn a_broken_message_is_a_general_failure() {
    let mut h = Harness::started();
    h.replies();
    h.feed("hello there\nURI: x\n\n");
    h.feed("600 URI Acquire\nFilename: /tmp/x\n\n");
    let replies = h.replies();
    assert_eq!(
        replies.iter().map(|m| m.code).collect::<Vec<_>>(),
        [401, 401]
    );
    let mut reader = Reader::default();
    reader.line(b"600 URI Acquire");
    reader.too_long();
    assert!(reader.line(b"").unwrap().is_err());
}

#[test]
fn a_600_becomes_a_download() {
    let mut h = Harness::started();
    h.feed(&acquire(
        "http://127.0.0.1:8/./pool/a%3a1_all.deb",
        &format!(
            "Expected-SHA256: {SHA256}\nExpected-MD5Sum: {MD5}\nExpected-Checksum-FileSize: 176932\n\
             Target-Type: deb\nMaximum-Size: 10000000\nLast-Modified: Sun, 22 Nov 2026 11:12:52 GMT\n"
        ),
    ));
    let downloads = h.downloads();
    let d = &downloads[0].1;
    assert_eq!(d.id, "http://127.0.0.1:8/./pool/a%3a1_all.deb");
    assert_eq!(
        d.source,
        Source::Urls(vec!["http://127.0.0.1:8/./pool/a%3a1_all.deb".into()])
    );
    assert_eq!(d.dest, Path::new("/tmp/partial/x.deb"));
    assert_eq!(
        d.hashes,
        vec![
            (Algorithm::Sha256, SHA256.to_string()),
            (Algorithm::Md5, MD5.to_string())
        ]
    );
    assert_eq!((d.size, d.max_size), (Some(176932), Some(10000000)));
    // Not an index: apt's date is not a validator for it.
    assert_eq!(d.if_modified_since, None);
    assert!(d.continue_dest && d.server_mtime && d.progress && !d.resume);
    assert!(d.transport.is_none() && d.headers.is_empty());
    let mut request = Request::from(d.clone());
    request.validate().unwrap();
}

#[test]
fn an_index_file_asks_if_modified_since() {
    let mut h = Harness::started();
    h.feed(&acquire(
        "http://h/./Release",
        "Index-File: true\nLast-Modified: Sun, 22 Nov 2026 11:12:52 GMT\n",
    ));
    let d = &h.downloads()[0].1;
    assert_eq!(
        d.if_modified_since.as_deref(),
        Some("Sun, 22 Nov 2026 11:12:52 GMT")
    );
}

#[test]
fn a_uri_curl_would_refuse_is_encoded_but_answered_as_sent() {
    let uri = "http://h/a b\u{e9}.deb";
    let mut h = Harness::started();
    h.feed(&acquire(uri, ""));
    let d = &h.downloads()[0].1;
    assert_eq!(d.id, uri);
    assert_eq!(
        d.source,
        Source::Urls(vec!["http://h/a%20b%C3%A9.deb".into()])
    );
    h.replies();
    h.event(Event::Progress {
        id: uri,
        bytes: 1,
        total: None,
    });
    assert_eq!(h.replies()[0].field("URI"), Some(uri));
}

fn configure(h: &mut Harness, items: &[&str]) {
    let mut text = String::from("601 Configuration\n");
    for item in items {
        text.push_str(&format!("Config-Item: {item}\n"));
    }
    h.feed(&(text + "\n"));
}

#[test]
fn configuration_sets_transport_and_headers() {
    let mut h = Harness::started();
    configure(
        &mut h,
        &[
            "Acquire::Send-URI-Encoded=1",
            "CommandLine::AsString=apt-get%20update",
            "Acquire::http::Timeout=7",
            "acquire::HTTP::Dl-Limit=100",
            "Acquire::http::User-Agent=Debian%20APT-HTTP/1.3%20(x%3dy)",
            "Acquire::http::No-Cache=true",
            "Acquire::http::Proxy=http://127.0.0.1:3128/",
            "Acquire::http::Proxy::mirror.local=DIRECT",
            "Acquire::https::Timeout=9",
        ],
    );
    h.feed(&acquire("http://h/a", ""));
    h.feed(&acquire("http://mirror.local:80/b", ""));
    h.feed(&acquire("https://h/c", ""));
    h.feed(&acquire("http://h/d", "Proxy: http://other:1/\n"));
    let d = h.downloads();
    let seven = Duration::from_secs(7);
    assert_eq!(
        d[0].1.transport.as_deref(),
        Some(&Transport {
            connect_timeout: Some(seven),
            low_speed: Some(LowSpeed {
                bytes_per_second: 1,
                time: seven
            }),
            max_speed: Some(100 * 1024),
            response_timeout: Some(seven),
            proxy: Some("http://127.0.0.1:3128/".into()),
            ..Transport::default()
        })
    );
    assert_eq!(
        d[0].1.headers,
        [
            ("User-Agent", "Debian APT-HTTP/1.3 (x=y)"),
            ("Cache-Control", "no-cache"),
            ("Pragma", "no-cache")
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()))
    );
    let transport = |i: usize| d[i].1.transport.as_deref().unwrap().clone();
    assert_eq!(
        transport(1).proxy.as_deref(),
        Some(""),
        "DIRECT is no proxy"
    );
    assert_eq!(
        transport(2).connect_timeout,
        Some(Duration::from_secs(9)),
        "https overrides http"
    );
    assert_eq!(
        transport(2).max_speed,
        Some(100 * 1024),
        "https falls back on http"
    );
    assert_eq!(transport(3).proxy.as_deref(), Some("http://other:1/"));
}

#[test]
fn without_configuration_the_engine_defaults_stay() {
    let mut h = Harness::started();
    configure(&mut h, &["Acquire::http::Pipeline-Depth=5"]);
    h.feed(&acquire("http://h/a", ""));
    let d = &h.downloads()[0].1;
    assert!(d.transport.is_none() && d.headers.is_empty());
}

fn sent(h: &mut Harness, uri: &str, extra: &str) {
    h.feed(&acquire(uri, extra));
    h.downloads();
    h.replies();
}

#[test]
fn a_fetched_file_is_started_then_done_with_its_hashes() {
    let uri = "http://h/a.deb";
    let mut h = Harness::started();
    sent(
        &mut h,
        uri,
        &format!("Expected-SHA256: {SHA256}\nExpected-Checksum-FileSize: 5\n"),
    );
    h.event(Event::Started {
        id: uri,
        url: uri,
        attempt: 1,
    });
    assert!(
        h.replies().is_empty(),
        "no Start before the body: it may yet fail"
    );
    for bytes in [2, 4] {
        h.event(Event::Progress {
            id: uri,
            bytes,
            total: Some(5),
        });
    }
    let hashes = [(Algorithm::Sha256, SHA256.to_string())];
    h.event(Event::Done {
        id: uri,
        dest: Path::new("/tmp/partial/x.deb"),
        outcome: Outcome::Fetched {
            url: uri,
            status: Some(200),
            size: 5,
            hashes: &hashes,
            etag: None,
            last_modified: Some("Sunday, 22-Nov-26 11:12:08 GMT"),
        },
        attempts: &[],
        elapsed: Duration::ZERO,
    });
    let replies = h.replies();
    assert_eq!(
        replies.iter().map(|m| m.code).collect::<Vec<_>>(),
        [200, 201]
    );
    assert_eq!(replies[0].field("Size"), Some("5"));
    let expected = [
        ("URI", uri),
        ("Filename", "/tmp/partial/x.deb"),
        ("Size", "5"),
        ("SHA256-Hash", SHA256),
        ("Checksum-FileSize-Hash", "5"),
        ("Last-Modified", "Sun, 22 Nov 2026 11:12:08 GMT"),
    ]
    .map(|(n, v)| (n.to_string(), v.to_string()));
    assert_eq!(fields(&replies[1]), expected);
}

#[test]
fn a_whole_partial_is_started_and_done_without_a_request() {
    let uri = "http://h/b.deb";
    let mut h = Harness::started();
    sent(&mut h, uri, &format!("Expected-MD5Sum: {MD5}\n"));
    let hashes = [(Algorithm::Md5, MD5.to_string())];
    h.event(Event::Done {
        id: uri,
        dest: Path::new("/tmp/partial/x.deb"),
        outcome: Outcome::Cached {
            size: 9,
            hashes: &hashes,
        },
        attempts: &[],
        elapsed: Duration::ZERO,
    });
    let replies = h.replies();
    assert_eq!(
        replies.iter().map(|m| m.code).collect::<Vec<_>>(),
        [200, 201]
    );
    assert_eq!(replies[0].field("Size"), Some("9"));
    assert_eq!(replies[1].field("MD5Sum-Hash"), Some(MD5));
    assert_eq!(replies[1].field("MD5-Hash"), Some(MD5));
    assert_eq!(replies[1].field("Resume-Point"), Some("9"));
}

#[test]
fn not_modified_is_an_ims_hit() {
    let uri = "http://h/./Release";
    let date = "Sun, 22 Nov 2026 11:12:52 GMT";
    let mut h = Harness::started();
    sent(
        &mut h,
        uri,
        &format!("Index-File: true\nLast-Modified: {date}\n"),
    );
    h.event(Event::Started {
        id: uri,
        url: uri,
        attempt: 1,
    });
    h.event(Event::Done {
        id: uri,
        dest: Path::new("/tmp/partial/x.deb"),
        outcome: Outcome::NotModified {
            url: uri,
            status: Some(304),
            etag: None,
            last_modified: None,
        },
        attempts: &[],
        elapsed: Duration::ZERO,
    });
    let replies = h.replies();
    assert_eq!(replies.len(), 1, "no 200 for an IMS hit");
    assert_eq!(replies[0].code, 201);
    assert_eq!(replies[0].field("IMS-Hit"), Some("true"));
    assert_eq!(replies[0].field("Last-Modified"), Some(date));
    assert_eq!(replies[0].field("Size"), None);
}

fn failure(error: FetchError, extra: &str) -> Message {
    let uri = "http://h/a.deb";
    let mut h = Harness::started();
    sent(&mut h, uri, extra);
    h.event(Event::Started {
        id: uri,
        url: uri,
        attempt: 1,
    });
    h.event(Event::Failed {
        id: uri,
        error: &error,
        attempts: &[],
    });
    let mut replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].code, 400);
    assert_eq!(replies[0].field("URI"), Some(uri));
    assert!(replies[0].field("Message").is_some());
    replies.remove(0)
}

#[test]
fn failures_carry_apts_reasons_and_transience() {
    let cases = [
        (
            FetchError::HttpStatus { status: 404 },
            "",
            Some("HttpError404"),
            false,
        ),
        (
            FetchError::HttpStatus { status: 503 },
            "",
            Some("HttpError503"),
            true,
        ),
        (
            FetchError::HttpStatus { status: 429 },
            "",
            Some("HttpError429"),
            true,
        ),
        (FetchError::Timeout("x".into()), "", Some("Timeout"), true),
        (FetchError::TooSlow("x".into()), "", Some("Timeout"), true),
        (
            FetchError::Connect("x".into()),
            "",
            Some("ConnectionRefused"),
            true,
        ),
        (
            FetchError::Dns("x".into()),
            "",
            Some("ResolveFailure"),
            true,
        ),
        (FetchError::Network("x".into()), "", None, true),
        (
            FetchError::ChecksumMismatch {
                algorithm: "sha256",
                expected: "a".into(),
                actual: "b".into(),
            },
            "",
            Some("HashSumMismatch"),
            false,
        ),
        (
            FetchError::TooLarge { limit: 9 },
            "Maximum-Size: 9\n",
            Some("MaximumSizeExceeded"),
            false,
        ),
        (
            FetchError::TooLarge { limit: 9 },
            "Expected-Checksum-FileSize: 9\n",
            Some("HashSumMismatch"),
            false,
        ),
        (
            FetchError::TooManyRedirects("x".into()),
            "",
            Some("RedirectionLoop"),
            false,
        ),
    ];
    for (error, extra, reason, transient) in cases {
        let shown = format!("{error:?}");
        let reply = failure(error, extra);
        assert_eq!(reply.field("FailReason"), reason, "{shown}");
        assert_eq!(reply.flag("Transient-Failure"), transient, "{shown}");
    }
}

#[test]
fn a_refused_download_fails_by_its_uri() {
    let mut h = Harness::started();
    h.feed(&acquire("http://h/a", ""));
    h.feed(&acquire("http://h/b", ""));
    let tickets: Vec<Ticket> = h.downloads().iter().map(|(t, _)| *t).collect();
    h.replies();
    let error = FetchError::InvalidRequest("no".into());
    h.event(Event::Refused {
        ticket: tickets[1],
        id: Some("http://h/b"),
        error: &error,
    });
    let replies = h.replies();
    assert_eq!(replies[0].code, 400);
    assert_eq!(replies[0].field("URI"), Some("http://h/b"));
    assert_eq!(replies[0].field("Message"), Some("no"));
}

#[test]
fn a_uri_already_in_flight_waits_for_the_first_answer() {
    let uri = "http://h/a";
    let mut h = Harness::started();
    h.feed(&acquire(uri, ""));
    h.feed(&acquire(uri, ""));
    assert_eq!(h.downloads().len(), 1, "the engine has the id once");
    let error = FetchError::HttpStatus { status: 500 };
    h.event(Event::Failed {
        id: uri,
        error: &error,
        attempts: &[],
    });
    assert_eq!(
        h.downloads().len(),
        1,
        "the second goes once the first is answered"
    );
    h.event(Event::Failed {
        id: uri,
        error: &error,
        attempts: &[],
    });
    assert_eq!(
        h.replies().len(),
        1 + 2,
        "capabilities and one answer per 600"
    );
    assert!(h.downloads().is_empty());
}

#[test]
fn dequote_decodes_percent_escapes_only() {
    assert_eq!(settings::dequote("a%20b%3d%zz%4"), "a b=%zz%4");
}

#[test]
fn the_run_ends_with_success_however_it_ends() {
    let mut h = Harness::started();
    for stop in [
        None,
        Some(api::Stop::Signal(2)),
        Some(api::Stop::OutputClosed),
    ] {
        let summary = Summary {
            bytes: 0,
            elapsed: Duration::ZERO,
            stop,
        };
        let mut io = Io::new(&mut h.out, &mut h.submitted);
        assert_eq!(h.front.finish(&summary, &mut io), 0);
    }
}

#[test]
fn a_changed_index_is_started_when_it_is_done() {
    let uri = "http://h/./Release";
    let mut h = Harness::started();
    sent(
        &mut h,
        uri,
        "Index-File: true\nLast-Modified: Sun, 22 Nov 2026 11:12:52 GMT\n",
    );
    h.event(Event::Started {
        id: uri,
        url: uri,
        attempt: 1,
    });
    assert!(h.replies().is_empty(), "it may yet be an IMS hit");
    h.event(Event::Done {
        id: uri,
        dest: Path::new("/tmp/partial/x.deb"),
        outcome: Outcome::Fetched {
            url: uri,
            status: Some(200),
            size: 7,
            hashes: &[],
            etag: None,
            last_modified: None,
        },
        attempts: &[],
        elapsed: Duration::ZERO,
    });
    let replies = h.replies();
    assert_eq!(
        replies.iter().map(|m| m.code).collect::<Vec<_>>(),
        [200, 201]
    );
    assert_eq!(replies[0].field("Size"), Some("7"));
    assert_eq!(replies[1].field("IMS-Hit"), None);
}

#[test]
fn a_mismatch_tells_what_was_received() {
    let reply = failure(
        FetchError::ChecksumMismatch {
            algorithm: "sha256",
            expected: "a".into(),
            actual: SHA256.into(),
        },
        "",
    );
    assert_eq!(reply.field("SHA256-Hash"), Some(SHA256));
    let reply = failure(
        FetchError::SizeMismatch {
            expected: 5,
            actual: 4,
        },
        "",
    );
    assert_eq!(reply.field("Checksum-FileSize-Hash"), Some("4"));
}

#[test]
fn tls_items_of_the_https_method() {
    let mut h = Harness::started();
    configure(
        &mut h,
        &[
            "Acquire::https::CaInfo=/etc/ssl/private-ca.pem",
            "Acquire::https::Verify-Host=false",
            "Acquire::https::mirror.local::Verify-Peer=no",
            "Acquire::https::Verify-Peer::other.local=no",
            "Acquire::https::SslCert=/c.pem",
            "Acquire::https::SslKey=/k.pem",
        ],
    );
    h.feed(&acquire("https://h/a", ""));
    h.feed(&acquire("https://mirror.local/b", ""));
    h.feed(&acquire("https://other.local/b", ""));
    let d = h.downloads();
    let tls = |i: usize| d[i].1.transport.as_deref().unwrap().tls.clone();
    assert_eq!(
        tls(0).ca_file.as_deref(),
        Some(Path::new("/etc/ssl/private-ca.pem"))
    );
    assert_eq!(
        (tls(0).cert.as_deref(), tls(0).key.as_deref()),
        (Some(Path::new("/c.pem")), Some(Path::new("/k.pem")))
    );
    assert!(tls(0).verify_peer && !tls(0).verify_host);
    assert!(!tls(1).verify_peer && !tls(2).verify_peer, "per host");
}

#[test]
fn messages_show_no_password() {
    let reply = failure(
        FetchError::Network("redirected to http://v:pw-of-v@elsewhere/a.deb".into()),
        "",
    );
    assert_eq!(
        reply.field("Message"),
        Some("network error: redirected to http://v:***@elsewhere/a.deb")
    );
    let mut h = Harness::started();
    h.feed(&acquire("http://h/a", ""));
    let ticket = h.downloads()[0].0;
    h.replies();
    let error = FetchError::InvalidRequest("URL \"http://u:pw-of-u@h/a\" is odd".into());
    h.event(Event::Refused {
        ticket,
        id: Some("http://h/a"),
        error: &error,
    });
    let replies = h.replies();
    assert_eq!(
        replies[0].field("Message"),
        Some("URL \"http://u:***@h/a\" is odd")
    );
}
