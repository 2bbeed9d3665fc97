//! The core contract, end to end: the real binary against the test server.
//!
//! Each test asserts what a package manager would check: bytes on disk, digests and error
//! kinds in the events, exit statuses, and what the server saw.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::client::{self, bytes, download, entries, sha256_hex, Helper};
use support::server::{Stats, TestServer};

#[test]
fn three_hundred_files_verified_within_connection_limits() {
    let stats = Stats::new();
    let servers = [
        TestServer::start_on("127.0.0.1", stats.clone()),
        TestServer::start_on("127.0.0.2", stats.clone()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..300usize {
        let server = &servers[i % 2];
        let body = bytes(i as u64, 1 + (i * 977) % 40_000);
        let name = format!("f{i}.bin");
        server.add_file(&name, body.clone());
        let dest = dir.path().join(&name);
        // A short delay holds each response open long enough for parallelism to show.
        let mut request = download(
            &format!("f{i}"),
            &server.url(&format!("/delay/5/{name}")),
            &dest,
        );
        request["hashes"] = json!({"sha256": sha256_hex(&body)});
        requests.push(request);
        expected.push((format!("f{i}"), dest, body));
    }
    let run = client::run(&["--max-parallel", "6", "--max-per-host", "4"], &requests);
    run.assert_framing();
    assert_eq!(run.status, 0, "all done means exit 0");
    for (id, dest, body) in &expected {
        let done = run.done(id);
        assert_eq!(done["hashes"]["sha256"], sha256_hex(body));
        assert_eq!(done["size"], body.len());
        assert_eq!(done["status"], 200);
        assert_eq!(&std::fs::read(dest).unwrap(), body, "{id} on disk");
    }
    assert_eq!(entries(dir.path()).len(), 300, "no stray temporary files");
    assert_eq!(run.bye()["ok"], 300);
    let total_peak = stats.peak_connections();
    let peaks: Vec<usize> = servers.iter().map(TestServer::peak_connections).collect();
    eprintln!("peak connections: {total_peak} in total, {peaks:?} per host");
    assert!(
        total_peak <= 6,
        "server saw {total_peak} connections, limit 6"
    );
    for server in &servers {
        let peak = server.peak_connections();
        assert!(peak <= 4, "one host saw {peak} connections, limit 4");
        assert!(
            peak >= 2,
            "transfers to one host should overlap (peak {peak})"
        );
    }
}

/// Start `run` with one failing download to `dest` (which holds "old bytes"), and check
/// that it failed with `kind`, left `dest` alone and left no temporary file.
fn assert_fails_cleanly(server: &TestServer, request: Value, kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("pkg.rpm");
    std::fs::write(&dest, b"old bytes").unwrap();
    let mut request = request;
    request["dest"] = json!(dest);
    let id = request["id"].as_str().unwrap().to_string();
    let run = client::run(&[], &[request]);
    run.assert_framing();
    assert_eq!(run.failed_kind(&id), kind, "{:?}", run.events);
    assert_eq!(run.status, 1);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"old bytes",
        "dest untouched"
    );
    assert_eq!(
        entries(dir.path()),
        vec!["pkg.rpm"],
        "no temporary file left"
    );
    let _ = server;
}

#[test]
fn verification_failures_leave_dest_untouched() {
    let server = TestServer::start();
    let body = bytes(7, 30_000);
    server.add_file("p", body.clone());
    let url = server.url("/files/p");
    let base = |id: &str| json!({"op": "download", "id": id, "url": url, "dest": "/unused"});

    let mut wrong_digest = base("wrong-digest");
    wrong_digest["hashes"] = json!({"sha256": sha256_hex(b"something else")});
    assert_fails_cleanly(&server, wrong_digest, "checksum_mismatch");

    let mut wrong_md5 = base("wrong-md5");
    wrong_md5["hashes"] = json!({"sha256": sha256_hex(&body), "md5": "0".repeat(32)});
    assert_fails_cleanly(&server, wrong_md5, "checksum_mismatch");

    let mut short = base("size-too-big");
    short["size"] = json!(body.len() + 1);
    assert_fails_cleanly(&server, short, "size_mismatch");

    let mut long = base("size-too-small");
    long["size"] = json!(body.len() - 1);
    assert_fails_cleanly(&server, long, "too_large");

    let mut capped = base("capped");
    capped["max_size"] = json!(1000);
    assert_fails_cleanly(&server, capped, "too_large");
}

#[test]
fn http_errors_fail_with_their_status() {
    let server = TestServer::start();
    for code in [404, 500] {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        let request = download("e", &server.url(&format!("/status/{code}")), &dest);
        let run = client::run(&["--retries", "0"], &[request]);
        assert_eq!(run.failed_kind("e"), "http_status");
        assert_eq!(run.outcome("e")["error"]["status"], code);
        assert!(entries(dir.path()).is_empty(), "nothing written for {code}");
    }
}

#[test]
fn the_default_size_cap_applies_when_size_is_unknown() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("endless");
    let request = download("e", &server.url("/endless"), &dest);
    let run = client::run(&["--max-size", "2M"], &[request]);
    assert_eq!(run.failed_kind("e"), "too_large");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn a_body_cut_short_is_not_placed() {
    let server = TestServer::start();
    server.add_file("big", bytes(3, 200_000));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big");
    let run = client::run(
        &["--retries", "0"],
        &[download("cut", &server.url("/cut/120000/big"), &dest)],
    );
    assert_eq!(run.failed_kind("cut"), "truncated");
    assert!(
        entries(dir.path()).is_empty(),
        "nothing placed, no temp file"
    );
}

/// Bodies of 1 MiB and more are hashed by worker threads in several buffers: every
/// digest must still come out right, a wrong one must still keep the file out, and a body
/// that ends early must leave nothing behind.
#[test]
fn large_bodies_hashed_off_the_loop_are_verified_the_same() {
    use sha2::{Digest, Sha512};
    let server = TestServer::start();
    let mut requests = Vec::new();
    let mut files = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    for n in 0..3u64 {
        let body = bytes(40 + n, (5 << 20) + 12_345 * n as usize);
        let name = format!("large{n}");
        server.add_file(&name, body.clone());
        let mut request = download(
            &name,
            &server.url(&format!("/files/{name}")),
            &dir.path().join(&name),
        );
        request["size"] = json!(body.len());
        request["hashes"] = json!({
            "sha256": sha256_hex(&body),
            "sha512": format!("{:x}", Sha512::digest(&body)),
        });
        requests.push(request);
        files.push((name, body));
    }
    let run = client::run(&[], &requests);
    assert_eq!(run.status, 0, "{:?}", run.events);
    for (name, body) in &files {
        let done = run.done(name);
        assert_eq!(done["hashes"]["sha256"], json!(sha256_hex(body)));
        assert_eq!(
            done["hashes"]["sha512"],
            json!(format!("{:x}", Sha512::digest(body)))
        );
        assert_eq!(&std::fs::read(dir.path().join(name)).unwrap(), body);
    }

    let body = files[0].1.clone();
    let url = server.url("/files/large0");
    let mut wrong = json!({"op": "download", "id": "wrong", "url": url, "dest": "/unused"});
    wrong["hashes"] = json!({"sha256": sha256_hex(&body), "sha512": "0".repeat(128)});
    assert_fails_cleanly(&server, wrong, "checksum_mismatch");

    let cut_dir = tempfile::tempdir().unwrap();
    let run = client::run(
        &["--retries", "0"],
        &[download(
            "cut",
            &server.url("/cut/3000000/large0"),
            &cut_dir.path().join("x"),
        )],
    );
    assert_eq!(run.failed_kind("cut"), "truncated");
    assert!(
        entries(cut_dir.path()).is_empty(),
        "nothing placed, no temp file"
    );
}

#[test]
fn redirects_follow_http_but_never_file() {
    let server = TestServer::start();
    let body = bytes(11, 5000);
    server.add_file("target", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let to_http = server.url(&format!(
        "/redirect?to={}",
        percent_encode(&server.url("/files/target"))
    ));
    let to_file = server.url("/redirect?to=file%3A%2F%2F%2Fetc%2Fpasswd");
    let run = client::run(
        &[],
        &[
            download("http", &to_http, &dir.path().join("http")),
            download("file", &to_file, &dir.path().join("file")),
        ],
    );
    assert_eq!(std::fs::read(dir.path().join("http")).unwrap(), body);
    assert_eq!(run.done("http")["hashes"]["sha256"], sha256_hex(&body));
    assert_eq!(run.failed_kind("file"), "unsupported_scheme");
    assert_eq!(
        entries(dir.path()),
        vec!["http"],
        "nothing written for the file:// redirect"
    );
}

#[test]
fn content_encoding_is_never_decoded() {
    let server = TestServer::start();
    // Not valid gzip: a client that tried to decode it would fail or change the bytes.
    let body = bytes(5, 70_000);
    server.add_file("repodata.xml.gz", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("repodata.xml.gz");
    let mut request = download("gz", &server.url("/gzip/repodata.xml.gz"), &dest);
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    let run = client::run(&[], &[request]);
    run.done("gz");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        body,
        "stored bytes are the bytes served"
    );
    let seen = server.requests();
    let asked = seen.iter().find(|r| r.path.contains("gzip")).unwrap();
    assert_eq!(
        asked.header("accept-encoding"),
        None,
        "no Accept-Encoding asked for"
    );
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn bad_lines_get_one_invalid_each_and_the_rest_completes() {
    let server = TestServer::start();
    let body = bytes(1, 1000);
    server.add_file("ok", body.clone());
    server.add_file("slow", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let ok = |id: &str| download(id, &server.url("/files/ok"), &dir.path().join(id)).to_string();
    let slow = download(
        "slow",
        &server.url("/delay/1500/slow"),
        &dir.path().join("slow"),
    );
    let huge = format!(
        r#"{{"op":"download","id":"huge","url":"http://x/{}","dest":"/tmp/huge"}}"#,
        "a".repeat(2 << 20)
    );
    let lines = [
        ok("first"),                                                                   // 1
        "this is not json".to_string(),                                                // 2
        r#"{"op":"download","id":"typo","url":"http://h/x","dest":"/tmp/t","szie":1}"#.into(), // 3
        r#"{"op":"download","id":"nodest","url":"http://h/x"}"#.into(),                // 4
        slow.to_string(),                                                              // 5
        download("slow", &server.url("/files/ok"), &dir.path().join("dup")).to_string(), // 6
        r#"{"op":"download","id":"hex","url":"http://h/x","dest":"/tmp/t","hashes":{"sha256":"xyz"}}"#.into(), // 7
        r#"{"op":"download","id":"algo","url":"http://h/x","dest":"/tmp/t","hashes":{"crc32":"00000000"}}"#.into(), // 8
        r#"{"op":"explode","id":"op"}"#.into(),                                        // 9
        "{\"op\":\"download\",\"id\":\"ctl\",\"url\":\"http://h/a\\u0001b\",\"dest\":\"/tmp/t\"}".into(), // 10
        huge,                                                                          // 11
        ok("last"),                                                                    // 12
    ];
    let mut helper = Helper::spawn(&[]);
    helper.send_raw(&(lines.join("\n") + "\n"));
    let run = helper.finish();
    run.assert_framing();
    let invalid: Vec<(u64, Option<&str>)> = run
        .of("invalid")
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["id"].as_str()))
        .collect();
    assert_eq!(
        invalid,
        vec![
            (2, None),
            (3, Some("typo")),
            (4, Some("nodest")),
            (6, Some("slow")),
            (7, Some("hex")),
            (8, Some("algo")),
            (9, Some("op")),
            (10, Some("ctl")),
            (11, None),
        ]
    );
    for event in run.of("invalid") {
        assert_eq!(event["error"]["kind"], "invalid_request", "{event}");
    }
    for id in ["first", "slow", "last"] {
        run.done(id);
        assert_eq!(std::fs::read(dir.path().join(id)).unwrap(), body);
    }
    assert!(
        !dir.path().join("dup").exists(),
        "the duplicate id was not downloaded"
    );
    assert_eq!(run.bye()["invalid"], 9);
    assert_eq!(run.status, 1, "an invalid line makes the exit status 1");
}

fn file_requests(dir: &Path, count: usize) -> (String, Vec<Vec<u8>>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut text = String::new();
    let mut bodies = Vec::new();
    for i in 0..count {
        let body = bytes(100 + i as u64, 100 + i);
        let path = src.join(format!("s{i}"));
        std::fs::write(&path, &body).unwrap();
        let url = format!("file://{}", path.display());
        let mut request = download(
            &format!("d{i}"),
            &url,
            &dir.join("out").join(format!("d{i}")),
        );
        request["hashes"] = json!({"sha256": sha256_hex(&body)});
        text.push_str(&request.to_string());
        text.push('\n');
        bodies.push(body);
    }
    (text, bodies)
}

#[test]
fn stdin_may_be_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let (text, bodies) = file_requests(dir.path(), 20);
    let requests = dir.path().join("requests.jsonl");
    std::fs::write(&requests, text).unwrap();
    let stdin = std::fs::File::open(&requests).unwrap();
    let run = Helper::spawn_with(&["--file-urls"], stdin.into()).collect();
    run.assert_framing();
    assert_eq!(run.status, 0);
    for (i, body) in bodies.iter().enumerate() {
        run.done(&format!("d{i}"));
        assert_eq!(
            &std::fs::read(dir.path().join(format!("out/d{i}"))).unwrap(),
            body
        );
    }
}

#[test]
fn stdin_may_be_dev_null() {
    let run = Helper::spawn_with(&[], std::process::Stdio::null()).collect();
    run.assert_framing();
    assert_eq!(run.events.len(), 2, "hello and bye only");
    assert_eq!(run.status, 0);
}

#[test]
fn stdin_may_be_a_pipe_fed_slowly() {
    let dir = tempfile::tempdir().unwrap();
    let (text, bodies) = file_requests(dir.path(), 5);
    let mut helper = Helper::spawn(&["--file-urls"]);
    for line in text.lines() {
        // Split lines across writes to exercise reassembly.
        let (a, b) = line.split_at(line.len() / 2);
        helper.send_raw(a);
        std::thread::sleep(Duration::from_millis(20));
        helper.send_raw(&format!("{b}\n"));
    }
    let run = helper.finish();
    assert_eq!(run.status, 0);
    assert_eq!(run.of("done").len(), bodies.len());
}

#[test]
fn twenty_thousand_requests_before_reading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s");
    std::fs::write(&src, b"tiny file").unwrap();
    let url = format!("file://{}", src.display());
    let out = dir.path().join("out");
    let mut text = String::new();
    for i in 0..20_000 {
        let request = download(&format!("r{i}"), &url, &out.join(format!("r{i}")));
        text.push_str(&request.to_string());
        text.push('\n');
    }
    let mut helper = Helper::spawn(&["--max-parallel", "64", "--file-urls"]);
    // All 20,000 lines (about 3 MB, far beyond a pipe's buffer) are written before a single
    // event is read: a helper that blocked on stdout would deadlock here.
    let watchdog_pid = helper.pid();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(client::PATIENCE);
        let _ = std::process::Command::new("kill")
            .arg(watchdog_pid.to_string())
            .status();
    });
    helper.send_raw(&text);
    let run = helper.finish();
    drop(watchdog);
    run.assert_framing();
    assert_eq!(run.of("done").len(), 20_000);
    assert_eq!(run.bye()["ok"], 20_000);
    assert_eq!(run.status, 0);
    assert_eq!(entries(&out).len(), 20_000);
}

#[test]
fn cancel_ends_only_that_transfer() {
    let server = TestServer::start();
    server.add_file("slow", bytes(9, 100_000));
    let fast_body = bytes(10, 50_000);
    server.add_file("fast", fast_body.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Helper::spawn(&[]);
    helper.send(&download(
        "slow",
        &server.url("/trickle/2000/slow"),
        &dir.path().join("slow"),
    ));
    helper.wait_for("progress on slow", |e| {
        e["event"] == "start" && e["id"] == "slow"
    });
    // Let some bytes land in the temporary file before cancelling.
    std::thread::sleep(Duration::from_millis(600));
    helper.send(&json!({"op": "cancel", "id": "slow"}));
    helper.send(&download(
        "fast",
        &server.url("/files/fast"),
        &dir.path().join("fast"),
    ));
    let run = helper.finish();
    assert_eq!(run.failed_kind("slow"), "cancelled");
    run.done("fast");
    assert_eq!(std::fs::read(dir.path().join("fast")).unwrap(), fast_body);
    assert_eq!(
        entries(dir.path()),
        vec!["fast"],
        "cancelled: nothing placed, no temp file"
    );
    assert_eq!(run.status, 1, "a cancelled download counts as failed");
}

#[test]
fn cancel_of_a_queued_download() {
    let server = TestServer::start();
    server.add_file("a", bytes(1, 10));
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Helper::spawn(&["--max-parallel", "1"]);
    let text = [
        download(
            "first",
            &server.url("/delay/500/a"),
            &dir.path().join("first"),
        )
        .to_string(),
        download(
            "queued",
            &server.url("/files/a"),
            &dir.path().join("queued"),
        )
        .to_string(),
        json!({"op": "cancel", "id": "queued"}).to_string(),
        json!({"op": "cancel", "id": "nobody"}).to_string(),
    ]
    .join("\n");
    helper.send_raw(&(text + "\n"));
    let run = helper.finish();
    run.done("first");
    assert_eq!(run.failed_kind("queued"), "cancelled");
    assert!(!dir.path().join("queued").exists());
    let unknown = run.of("invalid");
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["id"], "nobody");
    assert_eq!(
        run.events
            .iter()
            .filter(|e| e["id"] == "queued" && e["event"] == "start")
            .count(),
        0,
        "a cancelled queued download never starts"
    );
}

#[test]
fn eof_with_work_in_flight_finishes_everything_then_bye() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut requests = Vec::new();
    for i in 0..10 {
        server.add_file(&format!("f{i}"), bytes(i, 20_000));
        requests.push(download(
            &format!("f{i}"),
            &server.url(&format!("/delay/300/f{i}")),
            &dir.path().join(format!("f{i}")),
        ));
    }
    // client::run closes stdin right after writing: all ten are still in flight then.
    let run = client::run(&["--max-parallel", "4"], &requests);
    run.assert_framing();
    assert_eq!(run.of("done").len(), 10);
    assert_eq!(run.status, 0);
}

#[test]
fn an_existing_verified_file_is_reused_without_a_request() {
    let server = TestServer::start();
    let body = bytes(21, 4096);
    server.add_file("c", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("c");
    std::fs::write(&dest, &body).unwrap();
    let mut request = download("c", &server.url("/files/c"), &dest);
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    request["size"] = json!(body.len());
    let run = client::run(&[], &[request.clone()]);
    assert_eq!(run.done("c")["cached"], true);
    assert!(server.requests().is_empty(), "no request for a cached file");

    // Without a digest the file is not trusted.
    let mut untrusted = request;
    untrusted.as_object_mut().unwrap().remove("hashes");
    let run = client::run(&[], &[untrusted]);
    assert_eq!(run.done("c")["cached"], false);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn urls_are_tried_in_order() {
    let server = TestServer::start();
    let body = bytes(31, 3000);
    server.add_file("m", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut request = download("m", "unused", &dir.path().join("m"));
    request.as_object_mut().unwrap().remove("url");
    request["urls"] = json!([server.url("/status/404"), server.url("/files/m")]);
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    let run = client::run(&[], &[request]);
    let done = run.done("m");
    assert_eq!(done["url"], server.url("/files/m"));
    assert_eq!(done["attempts"], 2);
    assert_eq!(std::fs::read(dir.path().join("m")).unwrap(), body);
}

#[test]
fn priority_orders_the_queue() {
    let server = TestServer::start();
    server.add_file("x", bytes(2, 100));
    let dir = tempfile::tempdir().unwrap();
    let mut requests = Vec::new();
    for (id, priority) in [("low", 0), ("high", 10), ("mid", 5), ("high2", 10)] {
        let mut r = download(id, &server.url("/files/x"), &dir.path().join(id));
        r["priority"] = json!(priority);
        requests.push(r);
    }
    let run = client::run(&["--max-parallel", "1"], &requests);
    let starts: Vec<&str> = run
        .of("start")
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(starts, vec!["high", "high2", "mid", "low"]);
}

#[test]
fn progress_events_are_throttled_and_monotonic() {
    let server = TestServer::start();
    server.add_file("p", bytes(4, 6000));
    let dir = tempfile::tempdir().unwrap();
    let mut request = download("p", &server.url("/trickle/4000/p"), &dir.path().join("p"));
    request["progress"] = json!(true);
    let run = client::run(&[], &[request]);
    run.done("p");
    let progress: Vec<u64> = run
        .of("progress")
        .iter()
        .map(|e| e["bytes"].as_u64().unwrap())
        .collect();
    assert!(
        progress.len() >= 2,
        "a 1.5 s transfer reports progress: {progress:?}"
    );
    assert!(
        progress.len() <= 10,
        "at most a few per second: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
}

#[test]
fn a_stalled_body_fails_as_too_slow() {
    let server = TestServer::start();
    server.add_file("stall", bytes(8, 100_000));
    let dir = tempfile::tempdir().unwrap();
    let request = download(
        "stall",
        &server.url("/trickle/10/stall"),
        &dir.path().join("stall"),
    );
    let started = std::time::Instant::now();
    let run = client::run(
        &[
            "--low-speed-limit",
            "1000",
            "--low-speed-time",
            "2",
            "--retries",
            "0",
        ],
        &[request],
    );
    assert_eq!(run.failed_kind("stall"), "too_slow");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(entries(dir.path()).is_empty());
}

// A signal, or a closed stdout, in the middle of a body: one test per way of receiving a body
// (src/body/store.rs), each signalled only once the helper has reported the bytes sent so far as
// received and the body is where its size says it should be.

/// Where the bytes of a body being received are, by its size (a known `Content-Length`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receiving {
    /// Under 128 KiB: in memory; nothing is on disk until the verified body is placed.
    InMemory,
    /// 128 KiB to 1 MiB: an anonymous (`O_TMPFILE`) file beside `dest`, written by a hashing
    /// worker; it has no name until it is linked in as `dest`.
    AnonymousFile,
    /// Over 1 MiB: a named temporary file `.NAME.PID.N.fetchmux-tmp` beside `dest`.
    NamedFile,
}

impl Receiving {
    fn body_len(self) -> usize {
        match self {
            Receiving::InMemory => 100_000,
            Receiving::AnonymousFile => 300 * 1024,
            Receiving::NamedFile => 2 << 20,
        }
    }
}

/// Bytes the server sends of a signalled body before it stalls (`/stall`), and that the helper
/// must report received (a `progress` event) before the test signals it. The rest never
/// comes, so the signal always lands mid-body however slow the machine is.
const LANDED: u64 = 40 * 1024;

/// A server sending the first [`LANDED`] bytes of a body of `receiving`'s size as `slow` and
/// then stalling, a directory for it, and a request for it with `progress` events.
fn stalled_download(receiving: Receiving) -> (TestServer, tempfile::TempDir, Value) {
    let server = TestServer::start();
    server.add_file("slow", bytes(9, receiving.body_len()));
    let dir = tempfile::tempdir().unwrap();
    let mut request = download(
        "slow",
        &server.url(&format!("/stall/{LANDED}/slow")),
        &dir.path().join("slow"),
    );
    request["progress"] = json!(true);
    (server, dir, request)
}

/// A `progress` event saying that at least [`LANDED`] bytes have been received.
fn landed(event: &Value) -> bool {
    event["event"] == "progress" && event["bytes"].as_u64().is_some_and(|b| b >= LANDED)
}

/// `name` is a temporary file of the helper with process id `pid` for `dest` `slow`:
/// `.slow.<pid>.<random>.<n>.fetchmux-tmp` (or `.slow.<pid>.<n>.fetchmux-tmp` before the
/// random part).
fn is_temporary_file_of(name: &str, pid: u32) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    name.strip_prefix(&format!(".slow.{pid}."))
        .and_then(|rest| rest.strip_suffix(".fetchmux-tmp"))
        .is_some_and(|rest| match rest.split_once('.') {
            Some((random, n)) => hex(random) && digits(n),
            None => digits(rest),
        })
}

/// The files in `dir` that process `pid` has open, as `/proc` names them (an anonymous file is
/// `#INODE (deleted)`), sorted; a descriptor of `dir` itself is left out.
fn open_files_in(pid: u32, dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let mut open: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let name = target
                .strip_prefix(&dir)
                .ok()?
                .to_string_lossy()
                .into_owned();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    open.sort();
    open
}

/// The body is being received the way its size says, by the helper with process id `pid`.
fn assert_receiving(receiving: Receiving, pid: u32, dir: &Path) {
    let (listed, open) = (entries(dir), open_files_in(pid, dir));
    let anonymous = |name: &String| name.starts_with('#') && name.ends_with(" (deleted)");
    let ok = match receiving {
        Receiving::InMemory => listed.is_empty() && open.is_empty(),
        Receiving::AnonymousFile => listed.is_empty() && open.iter().any(anonymous),
        Receiving::NamedFile => {
            listed.len() == 1
                && is_temporary_file_of(&listed[0], pid)
                && open.iter().all(|name| *name == listed[0])
                && !open.is_empty()
        }
    };
    assert!(
        ok,
        "{receiving:?}: directory holds {listed:?}, the helper has open there {open:?}"
    );
}

/// Start a download of a body received the way `receiving` says, wait until the helper
/// reports the first [`LANDED`] bytes received, then send it `signal`; returns the run, the
/// download's directory and the helper's process id.
fn signal_mid_transfer(
    signal: &str,
    receiving: Receiving,
) -> (client::Run, tempfile::TempDir, u32) {
    let (_server, dir, request) = stalled_download(receiving);
    let mut helper = Helper::spawn(&[]);
    let pid = helper.pid();
    helper.send(&request);
    let progress = helper.wait_for("progress with bytes received", landed);
    assert_eq!(progress["total"], receiving.body_len(), "length known");
    assert_receiving(receiving, pid, dir.path());
    std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    (helper.collect(), dir, pid)
}

/// SIGTERM: the download fails `aborted`, `bye` comes last, the exit status is 128+15, and
/// nothing is left in the directory.
fn sigterm_mid_transfer(receiving: Receiving) {
    let (run, dir, _) = signal_mid_transfer("-TERM", receiving);
    run.assert_framing();
    assert_eq!(run.failed_kind("slow"), "aborted");
    assert_eq!(run.events.last().unwrap()["event"], "bye");
    assert_eq!(run.status, 128 + 15);
    assert!(
        entries(dir.path()).is_empty(),
        "temporary file removed: {:?}",
        entries(dir.path())
    );
}

#[test]
fn sigterm_aborts_cleans_up_and_says_bye() {
    sigterm_mid_transfer(Receiving::InMemory);
}

#[test]
fn sigterm_aborts_cleans_up_and_says_bye_anonymous_file_300k() {
    sigterm_mid_transfer(Receiving::AnonymousFile);
}

#[test]
fn sigterm_aborts_cleans_up_and_says_bye_named_file_2m() {
    sigterm_mid_transfer(Receiving::NamedFile);
}

/// The parent closes its end of stdout (stdin still open): the helper aborts, removes what it
/// was writing, and exits 1.
fn close_stdout_mid_transfer(receiving: Receiving) {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let (_server, dir, request) = stalled_download(receiving);
    let mut child = Command::new(client::binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{request}").unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "helper ended early"
        );
        let event: Value = serde_json::from_str(&line).unwrap();
        client::assert_schema(&event);
        assert!(
            event["event"] != "done" && event["event"] != "failed",
            "the download ended before the test: {event}"
        );
        if landed(&event) {
            break;
        }
    }
    assert_receiving(receiving, child.id(), dir.path());
    drop(stdout); // the parent stops listening, stdin still open
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "helper kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    assert!(
        entries(dir.path()).is_empty(),
        "temporary file removed: {:?}",
        entries(dir.path())
    );
    drop(stdin);
}

#[test]
fn closing_stdout_aborts_and_cleans_up() {
    close_stdout_mid_transfer(Receiving::InMemory);
}

#[test]
fn closing_stdout_aborts_and_cleans_up_anonymous_file_300k() {
    close_stdout_mid_transfer(Receiving::AnonymousFile);
}

#[test]
fn closing_stdout_aborts_and_cleans_up_named_file_2m() {
    close_stdout_mid_transfer(Receiving::NamedFile);
}

/// SIGKILL: nothing runs to clean up, so what is left is what was on disk under a name.
fn sigkill_mid_transfer(receiving: Receiving) -> (tempfile::TempDir, u32) {
    let (run, dir, pid) = signal_mid_transfer("-KILL", receiving);
    assert_eq!(run.status, 128 + 9);
    assert!(!dir.path().join("slow").exists(), "dest never placed");
    (dir, pid)
}

#[test]
fn a_killed_helper_leaves_no_temporary_file() {
    // The bytes so far were in memory: nothing on disk, nothing left.
    let (dir, _) = sigkill_mid_transfer(Receiving::InMemory);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn a_killed_helper_leaves_no_temporary_file_anonymous_file_300k() {
    // The bytes so far lived in an anonymous file: it vanished with the process.
    let (dir, _) = sigkill_mid_transfer(Receiving::AnonymousFile);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

/// A killed helper leaves a large body's named temporary file behind: no process is alive to
/// remove it. The next run that downloads into that directory removes it (docs/design.md,
/// "What a killed helper leaves").
#[test]
fn a_killed_helpers_named_temporary_file_2m_is_removed_by_the_next_run() {
    let (dir, pid) = sigkill_mid_transfer(Receiving::NamedFile);
    let left = entries(dir.path());
    assert_eq!(left.len(), 1, "one temporary file left: {left:?}");
    assert!(
        is_temporary_file_of(&left[0], pid),
        "only the killed helper's temporary file (pid {pid}) is left: {left:?}"
    );
    let server = TestServer::start();
    server.add_file("other", bytes(3, 1000));
    let run = client::run(
        &[],
        &[download(
            "other",
            &server.url("/files/other"),
            &dir.path().join("other"),
        )],
    );
    assert_eq!(run.status, 0);
    run.done("other");
    assert_eq!(
        entries(dir.path()),
        ["other"],
        "the stale temporary file removed"
    );
}

/// Every run in a fresh PID namespace is process 1, so a helper SIGKILLed there left a
/// temporary file named like the one the next run's first large body gets. The next run's
/// download of the same `dest` is done anyway (a random part in every name, and a retry on an
/// existing name), and the stale file is removed. Skipped where `unshare` cannot be used.
#[test]
fn a_rerun_in_a_fresh_pid_namespace_is_not_hurt_by_a_killed_runs_temporary_file() {
    let (server, dir, request) = stalled_download(Receiving::NamedFile);
    let Some(mut helper) = Helper::spawn_in_pid_namespace(&[]) else {
        eprintln!("SKIPPED: unshare --pid --fork does not work here");
        return;
    };
    helper.send(&request);
    helper.wait_for("progress with bytes received", landed);
    let left = entries(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(is_temporary_file_of(&left[0], 1), "pid 1: {left:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &helper.pid().to_string()])
        .status()
        .unwrap();
    let run = helper.collect();
    assert_eq!(run.status, 128 + 9);
    assert_eq!(entries(dir.path()), left, "the temporary file is left");

    let body = bytes(9, Receiving::NamedFile.body_len());
    let mut helper = Helper::spawn_in_pid_namespace(&[]).unwrap();
    helper.send(&download(
        "slow",
        &server.url("/files/slow"),
        &dir.path().join("slow"),
    ));
    let run = helper.finish();
    assert_eq!(run.status, 0, "{:?}", run.events);
    run.done("slow");
    assert_eq!(std::fs::read(dir.path().join("slow")).unwrap(), body);
    assert_eq!(
        entries(dir.path()),
        ["slow"],
        "the stale temporary file removed"
    );
}

/// Stale temporary files (of a dead process, held by nobody) are removed from a directory a
/// later run downloads into; a live helper's (its pid running, or a `flock` held on it) and
/// resumable partials are kept.
#[test]
fn stale_temporary_files_are_removed_live_ones_and_partials_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = [
        format!(".a.{dead_pid}.0123456789abcdef.0.fetchmux-tmp"),
        format!(".b.{dead_pid}.7.fetchmux-tmp"),
    ];
    for name in &stale {
        std::fs::write(dir.path().join(name), b"stale").unwrap();
    }
    // A live helper's file: its pid (this test's) is running.
    let live_pid = format!(".c.{}.fedcba9876543210.0.fetchmux-tmp", std::process::id());
    std::fs::write(dir.path().join(&live_pid), b"live").unwrap();
    // A live helper in another PID namespace: its pid means nothing here, but it holds a lock.
    let locked = format!(".d.{dead_pid}.00000000000000ff.1.fetchmux-tmp");
    let mut holder = std::process::Command::new("flock")
        .arg(dir.path().join(&locked))
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let partials = [".e.fetchmux-partial", ".e.fetchmux-partial.meta"];
    for name in partials {
        std::fs::write(dir.path().join(name), b"partial").unwrap();
    }
    let started = std::time::Instant::now();
    while !dir.path().join(&locked).exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "flock started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100)); // the lock is taken; all are older than the run
    let server = TestServer::start();
    server.add_file("f", bytes(4, 1000));
    let run = client::run(
        &[],
        &[download(
            "f",
            &server.url("/files/f"),
            &dir.path().join("f"),
        )],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(run.status, 0);
    run.done("f");
    let mut expected = vec!["f".to_string(), live_pid, locked];
    expected.extend(partials.map(String::from));
    expected.sort();
    assert_eq!(entries(dir.path()), expected);
}
