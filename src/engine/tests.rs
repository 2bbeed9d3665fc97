//! The engine's state machine driven through the typed API, in process: a recording front
//! submits `api::Request`s and keeps every `api::Event`; the loop is turned step by step so
//! that a test can act while a download is in a given state (queued, active, hashing,
//! placing). The HTTP side is the integration tests' own server (tests/support/server.rs).

#[path = "../../tests/support/server.rs"]
#[allow(dead_code)]
mod server;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::Events;

use super::downloads::State;
use super::{Engine, Next, TURN};
use crate::api::{About, Download, Event, Outcome, Request, Source, Summary};
use crate::body::digest::{Algorithm, Digests};
use crate::config::Options;
use crate::error::ErrorKind;
use crate::front::{Front, Io, Line};
use crate::test_support::entries;
use server::TestServer;

/// An event as the test keeps it.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Started {
        id: String,
        attempt: u32,
    },
    /// `how`: fetched, cached or not_modified; `earlier`: the failed attempts' kinds.
    Done {
        id: String,
        how: &'static str,
        url: Option<String>,
        earlier: Vec<ErrorKind>,
    },
    Failed {
        id: String,
        kind: ErrorKind,
        attempts: Vec<ErrorKind>,
    },
    Refused {
        ticket: u64,
        kind: ErrorKind,
    },
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    /// `Summary::bytes`, once the run ended.
    bytes: Option<u64>,
}

/// How often the recorder asks to be called when nothing happens: a run that waits for no
/// reason ends a wait after this (and fails its test) instead of hanging.
const HEARTBEAT: Duration = Duration::from_secs(3);

/// A front that reads no stdin, submits its requests at start (and more when a download it
/// names is done, as a client that reads metadata would) and records what happens.
struct Recorder {
    requests: Vec<Request>,
    /// When the download with this id is done, submit this request.
    then: Vec<(String, Request)>,
    log: Rc<RefCell<Log>>,
}

impl Front for Recorder {
    fn reads_stdin(&self) -> bool {
        false
    }

    fn start(&mut self, _about: &About<'_>, io: &mut Io<'_>) {
        for (ticket, request) in self.requests.drain(..).enumerate() {
            io.submit(ticket as u64, request);
        }
    }

    fn input(&mut self, _line: Line<'_>, _io: &mut Io<'_>) {
        unreachable!("reads no stdin")
    }

    fn tick(&mut self, now: Instant, _io: &mut Io<'_>) -> Option<Instant> {
        Some(now + HEARTBEAT)
    }

    fn event(&mut self, event: &Event<'_>, io: &mut Io<'_>) {
        if let Event::Done { id, .. } = event {
            if let Some(at) = self.then.iter().position(|(after, _)| after == id) {
                let (_, request) = self.then.remove(at);
                io.submit(1000 + at as u64, request);
            }
        }
        let kinds = |attempts: &[crate::api::Attempt]| -> Vec<ErrorKind> {
            attempts.iter().map(|a| a.error.kind()).collect()
        };
        let seen = match event {
            Event::Started { id, attempt, .. } => Seen::Started {
                id: id.to_string(),
                attempt: *attempt,
            },
            Event::Progress { .. } | Event::MirrorAside { .. } | Event::MirrorBack { .. } => return,
            Event::Done {
                id,
                outcome,
                attempts,
                ..
            } => {
                let (how, url) = match outcome {
                    Outcome::Fetched { url, .. } => ("fetched", Some(url.to_string())),
                    Outcome::Cached { .. } => ("cached", None),
                    Outcome::NotModified { url, .. } => ("not_modified", Some(url.to_string())),
                };
                Seen::Done {
                    id: id.to_string(),
                    how,
                    url,
                    earlier: kinds(attempts),
                }
            }
            Event::Failed {
                id,
                error,
                attempts,
            } => Seen::Failed {
                id: id.to_string(),
                kind: error.kind(),
                attempts: kinds(attempts),
            },
            Event::Refused { ticket, error, .. } => Seen::Refused {
                ticket: *ticket,
                kind: error.kind(),
            },
        };
        self.log.borrow_mut().seen.push(seen);
    }

    fn finish(&mut self, summary: &Summary, _io: &mut Io<'_>) -> i32 {
        self.log.borrow_mut().bytes = Some(summary.bytes);
        0
    }
}

/// An engine under a [`Recorder`], turned by hand.
struct Harness {
    engine: Option<Engine>,
    events: Events,
    log: Rc<RefCell<Log>>,
}

impl Harness {
    fn new(args: &[&str], requests: Vec<Request>) -> Harness {
        Harness::with_followers(args, requests, Vec::new())
    }

    /// As [`Harness::new`], with requests submitted when the named downloads are done.
    fn with_followers(
        args: &[&str],
        requests: Vec<Request>,
        then: Vec<(String, Request)>,
    ) -> Harness {
        let options =
            Options::try_parse_from(std::iter::once("fetchmux").chain(args.iter().copied()))
                .unwrap();
        let log = Rc::new(RefCell::new(Log::default()));
        let front = Recorder {
            requests,
            then,
            log: Rc::clone(&log),
        };
        let mut engine = Engine::new(options, Box::new(front)).unwrap();
        engine.begin();
        Harness {
            engine: Some(engine),
            events: Events::with_capacity(64),
            log,
        }
    }

    fn engine(&mut self) -> &mut Engine {
        self.engine.as_mut().unwrap()
    }

    /// Turn the loop, checking `until` after every step of every turn; panics if it does not
    /// hold within 20 s.
    fn turn_until(&mut self, what: &str, until: impl Fn(&Engine, &Log) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let engine = self.engine.as_mut().unwrap();
        loop {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            match engine.wait(&mut self.events) {
                Next::Work => {}
                Next::Finish | Next::Broken => panic!("the run ended before: {what}"),
            }
            for step in TURN {
                step(engine);
                if until(engine, &self.log.borrow()) {
                    return;
                }
            }
        }
    }

    /// Submit `request` as the front would (ticket 100 and up).
    fn submit(&mut self, ticket: u64, request: Request) {
        self.engine().carry_out(ticket, request);
    }

    /// Turn the loop to its end; returns what was seen and the summary's bytes.
    fn finish(mut self) -> (Vec<Seen>, u64) {
        let mut engine = self.engine.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "the run did not end");
            match engine.wait(&mut self.events) {
                Next::Work => TURN.iter().for_each(|step| step(&mut engine)),
                Next::Finish => break,
                Next::Broken => panic!("poll failed"),
            }
        }
        assert_eq!(engine.end(), 0);
        let log = self.log.borrow();
        (log.seen.clone(), log.bytes.unwrap())
    }
}

/// The state of download `id`, if it is still in the table.
fn state_of(engine: &Engine, id: &str) -> Option<&'static str> {
    let key = engine.downloads.key_of(id)?;
    Some(match engine.downloads[key].state {
        State::Queued => "queued",
        State::Active(_) => "active",
        State::Hashing(_) => "hashing",
        State::Placing(_) => "placing",
    })
}

fn sha256(bytes: &[u8]) -> String {
    let mut digests = Digests::new([]);
    digests.update(bytes);
    digests.finish().remove(0).1
}

fn body(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn download(id: &str, urls: &[String], dest: &Path, bytes: &[u8]) -> Request {
    let mut download = Download::new(id, Source::Urls(urls.to_vec()), dest);
    download.size = Some(bytes.len() as u64);
    download.hashes = vec![(Algorithm::Sha256, sha256(bytes))];
    download.into()
}

fn done(id: &str, how: &'static str, url: Option<String>, earlier: Vec<ErrorKind>) -> Seen {
    Seen::Done {
        id: id.into(),
        how,
        url,
        earlier,
    }
}

#[test]
fn a_transient_failure_is_retried_after_a_backoff() {
    let server = TestServer::start();
    let bytes = body(1, 5_000);
    server.add_file("a", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a");
    let url = server.url("/flaky/1/a");
    let mut run = Harness::new(
        &[],
        vec![download("a", std::slice::from_ref(&url), &dest, &bytes)],
    );
    run.turn_until("the first attempt failed", |e, _| {
        e.downloads
            .key_of("a")
            .is_some_and(|k| !e.downloads[k].job.attempts().is_empty())
    });
    assert_eq!(
        state_of(run.engine(), "a"),
        Some("queued"),
        "waiting out the backoff"
    );
    assert!(run.engine().scheduler.next_wake().is_some());
    let (seen, _) = run.finish();
    assert_eq!(
        seen.last().unwrap(),
        &done("a", "fetched", Some(url), vec![ErrorKind::HttpStatus])
    );
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn a_missing_file_fails_over_to_the_next_url_at_once() {
    let server = TestServer::start();
    let bytes = body(2, 5_000);
    server.add_file("b", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b");
    let urls = [server.url("/status/404"), server.url("/files/b")];
    let run = Harness::new(&[], vec![download("b", &urls, &dest, &bytes)]);
    let (seen, _) = run.finish();
    let started: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Started { .. }))
        .collect();
    assert_eq!(started.len(), 2);
    assert_eq!(
        seen.last().unwrap(),
        &done(
            "b",
            "fetched",
            Some(urls[1].clone()),
            vec![ErrorKind::HttpStatus]
        )
    );
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn cancel_while_queued_and_while_active() {
    let server = TestServer::start();
    let bytes = body(3, 100_000);
    server.add_file("slow", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("/trickle/20000/slow");
    let requests = vec![
        download(
            "first",
            std::slice::from_ref(&url),
            &dir.path().join("first"),
            &bytes,
        ),
        download("second", &[url], &dir.path().join("second"), &bytes),
    ];
    let mut run = Harness::new(&["--max-parallel", "1"], requests);
    run.turn_until("first active, second queued", |e, _| {
        state_of(e, "first") == Some("active") && state_of(e, "second") == Some("queued")
    });
    run.submit(
        100,
        Request::Cancel {
            id: "second".into(),
        },
    );
    run.submit(101, Request::Cancel { id: "first".into() });
    run.submit(102, Request::Cancel { id: "first".into() });
    let (seen, _) = run.finish();
    let failed = |id: &str, attempts| Seen::Failed {
        id: id.into(),
        kind: ErrorKind::Cancelled,
        attempts,
    };
    assert!(seen.contains(&failed("second", vec![])), "{seen:?}");
    assert!(
        seen.contains(&failed("first", vec![ErrorKind::Cancelled])),
        "{seen:?}"
    );
    // The second cancel of `first` names a download that no longer exists.
    assert!(seen.contains(&Seen::Refused {
        ticket: 102,
        kind: ErrorKind::InvalidRequest
    }));
    assert!(!seen
        .iter()
        .any(|s| matches!(s, Seen::Started { id, .. } if id == "second")));
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn cancel_while_a_worker_hashes_drops_the_body() {
    let server = TestServer::start();
    let bytes = body(4, 300 * 1024);
    server.add_file("big", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big");
    let request = download("big", &[server.url("/files/big")], &dest, &bytes);
    let mut run = Harness::new(&[], vec![request]);
    run.turn_until("the body is with a hashing worker", |e, _| {
        state_of(e, "big") == Some("hashing")
    });
    run.submit(100, Request::Cancel { id: "big".into() });
    assert_eq!(state_of(run.engine(), "big"), None);
    assert_eq!(run.engine().hashing_held, 0);
    let (seen, _) = run.finish();
    assert_eq!(
        seen.last().unwrap(),
        &Seen::Failed {
            id: "big".into(),
            kind: ErrorKind::Cancelled,
            attempts: vec![ErrorKind::Cancelled]
        }
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn cancel_while_placing_is_refused_and_the_file_arrives() {
    let server = TestServer::start();
    let bytes = body(5, 4_000);
    server.add_file("small", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("small");
    let url = server.url("/files/small");
    let mut run = Harness::new(
        &[],
        vec![download("small", std::slice::from_ref(&url), &dest, &bytes)],
    );
    run.turn_until("the verified body is with the placing worker", |e, _| {
        state_of(e, "small") == Some("placing")
    });
    run.submit(100, Request::Cancel { id: "small".into() });
    let (seen, _) = run.finish();
    assert!(seen.contains(&Seen::Refused {
        ticket: 100,
        kind: ErrorKind::InvalidRequest
    }));
    assert_eq!(
        seen.last().unwrap(),
        &done("small", "fetched", Some(url), vec![])
    );
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn a_verified_dest_is_cached_without_a_request() {
    let server = TestServer::start();
    let bytes = body(6, 3_000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("c");
    std::fs::write(&dest, &bytes).unwrap();
    let run = Harness::new(
        &[],
        vec![download("c", &[server.url("/files/c")], &dest, &bytes)],
    );
    let (seen, bytes_received) = run.finish();
    assert_eq!(seen, vec![done("c", "cached", None, vec![])]);
    assert_eq!(bytes_received, 0);
    assert!(server.requests().is_empty());
}

#[test]
fn not_modified_leaves_dest_as_it_was() {
    let server = TestServer::start();
    let bytes = body(7, 3_000);
    server.add_file("d", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d");
    std::fs::write(&dest, b"what the client has").unwrap();
    let url = server.url("/files/d");
    let mut request = Download::new("d", Source::Urls(vec![url.clone()]), &dest);
    request.if_none_match = Some(server::etag_of(&bytes));
    let run = Harness::new(&[], vec![request.into()]);
    let (seen, _) = run.finish();
    assert_eq!(
        seen.last().unwrap(),
        &done("d", "not_modified", Some(url), vec![])
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"what the client has");
}

/// `Summary::bytes` counts what came over the network: a resumed prefix is not counted
/// again.
#[test]
fn a_resumed_download_counts_each_byte_once() {
    let server = TestServer::start();
    let bytes = body(8, 200_000);
    server.add_file("r", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("r");
    let Request::Download(mut request) =
        download("r", &[server.url("/cutonce/50000/r")], &dest, &bytes)
    else {
        unreachable!()
    };
    request.resume = true;
    let run = Harness::new(&["--max-retry-wait", "1"], vec![Request::Download(request)]);
    let (seen, bytes_received) = run.finish();
    assert!(
        matches!(seen.last().unwrap(), Seen::Done { earlier, .. } if earlier == &[ErrorKind::Truncated]),
        "{seen:?}"
    );
    let ranges: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("range").map(str::to_owned))
        .collect();
    assert_eq!(ranges, vec![None, Some("bytes=50000-".to_string())]);
    assert_eq!(bytes_received, bytes.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

/// A client that reads a file and then asks for the files it names (metadata, then
/// packages, to any depth) submits from its event handler; the engine starts such a request
/// at once, not when some later event (or the front's next tick) happens to wake the loop.
#[test]
fn a_request_submitted_on_an_event_starts_at_once() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Vec::new();
    let mut first = None;
    for depth in 0..4 {
        let bytes = body(9 + depth, 2_000);
        let name = format!("level{depth}");
        server.add_file(&name, bytes.clone());
        let url = server.url(&format!("/files/{name}"));
        let request = download(&name, &[url], &dir.path().join(&name), &bytes);
        match depth {
            0 => first = Some(request),
            _ => chain.push((format!("level{}", depth - 1), request)),
        }
    }
    let started = Instant::now();
    let run = Harness::with_followers(&[], vec![first.unwrap()], chain);
    let (seen, _) = run.finish();
    let done = seen
        .iter()
        .filter(|s| matches!(s, Seen::Done { .. }))
        .count();
    assert_eq!(done, 4, "{seen:?}");
    assert!(
        started.elapsed() < HEARTBEAT / 2,
        "each level waited for a wake-up: {:?}",
        started.elapsed()
    );
}

/// Every request the servers saw, in order of arrival: (when, which server, path).
fn requests_in_order(servers: &[&TestServer]) -> Vec<(Instant, usize, String)> {
    let mut all: Vec<_> = servers
        .iter()
        .enumerate()
        .flat_map(|(index, server)| {
            server
                .requests()
                .into_iter()
                .map(move |r| (r.at, index, r.path))
        })
        .collect();
    all.sort_by_key(|r| r.0);
    all
}

/// Once every source has been tried, each further attempt waits out a backoff, whichever
/// source it goes to: two failing URLs do not burn the attempts back to back.
#[test]
fn alternating_sources_back_off_once_each_was_tried() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let dir = tempfile::tempdir().unwrap();
    let urls = [a.url("/status/503"), b.url("/status/503")];
    let run = Harness::new(
        &["--retries", "3", "--max-retry-wait", "1"],
        vec![download("x", &urls, &dir.path().join("x"), b"x")],
    );
    let (seen, _) = run.finish();
    assert!(
        matches!(seen.last().unwrap(), Seen::Failed { attempts, .. } if attempts.len() == 4),
        "{seen:?}"
    );
    let asked = requests_in_order(&[&a, &b]);
    assert_eq!(asked.len(), 4, "{asked:?}");
    // Both sources first, at once; then the backoff after the 2nd and 3rd transient
    // failures: 1 s each (0.5 s doubled, capped by --max-retry-wait 1), jittered to 0.5..1 s.
    assert_eq!((asked[0].1, asked[1].1), (0, 1), "{asked:?}");
    assert!(
        asked[1].0 - asked[0].0 < Duration::from_millis(250),
        "{asked:?}"
    );
    for n in 2..4 {
        let gap = asked[n].0 - asked[n - 1].0;
        assert!(
            gap >= Duration::from_millis(500),
            "attempt {} started {gap:?} after attempt {n}",
            n + 1
        );
    }
}

/// A source's `Retry-After` is a not-before time for every later attempt on it, not only
/// for the next attempt: with another source failing in between, the first is still not
/// asked again before its `Retry-After` has passed.
#[test]
fn retry_after_holds_for_every_later_attempt_on_that_source() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let dir = tempfile::tempdir().unwrap();
    let urls = [a.url("/status/503?retry_after=2"), b.url("/status/503")];
    let run = Harness::new(
        &["--retries", "3", "--max-retry-wait", "2"],
        vec![download("x", &urls, &dir.path().join("x"), b"x")],
    );
    let (seen, _) = run.finish();
    assert!(
        matches!(seen.last().unwrap(), Seen::Failed { attempts, .. } if attempts.len() == 4),
        "{seen:?}"
    );
    let asked = requests_in_order(&[&a, &b]);
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert_eq!(asked[0].1, 0, "{asked:?}");
    // The third attempt (after a backoff of 0.5..1 s) goes to B, whose server set no time,
    // rather than waiting for A.
    assert_eq!((asked[1].1, asked[2].1), (1, 1), "{asked:?}");
    let first = asked[0].0;
    for (at, server, path) in &asked[1..] {
        if *server == 0 {
            assert!(
                *at - first >= Duration::from_secs(2),
                "{path} asked again {:?} after its Retry-After: 2",
                *at - first
            );
        }
    }
}

mod per_request;
