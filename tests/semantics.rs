//! Package-manager semantics, end to end: mirrors and their health, retries and backoff,
//! resume, byte ranges, conditional requests, and the guards against stalled or endless
//! bodies. Each test drives the real binary against the test server's fault modes.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::{self, bytes, download, entries, sha256_hex, Helper};
use support::server::{etag_of, Stats, TestServer};

fn mirrors(set: &str, urls: &[String]) -> Value {
    json!({"op": "mirrors", "set": set, "urls": urls})
}

fn from_mirror(id: &str, set: &str, path: &str, dest: &std::path::Path, body: &[u8]) -> Value {
    json!({"op": "download", "id": id, "mirror": set, "path": path, "dest": dest,
           "size": body.len(), "hashes": {"sha256": sha256_hex(body)}})
}

/// The URLs of `id`'s `start` events, in order.
fn starts(run: &client::Run, id: &str) -> Vec<String> {
    run.of("start")
        .iter()
        .filter(|e| e["id"] == id)
        .map(|e| e["url"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_404_mirror_fails_over_at_once() {
    let stats = Stats::new();
    let m1 = TestServer::start_on("127.0.0.1", stats.clone());
    let m2 = TestServer::start_on("127.0.0.2", stats);
    let body = bytes(1, 20_000);
    m2.add_file("a.rpm", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.rpm");
    let run = client::run(
        &[],
        &[
            mirrors("f", &[m1.url("/files/"), m2.url("/files/")]),
            from_mirror("a", "f", "a.rpm", &dest, &body),
        ],
    );
    let done = run.done("a");
    assert_eq!(done["url"], m2.url("/files/a.rpm"));
    assert_eq!(done["attempts"], 2);
    assert_eq!(
        starts(&run, "a"),
        vec![m1.url("/files/a.rpm"), m2.url("/files/a.rpm")]
    );
    // The smallest backoff is 250 ms: a download this quick spent none.
    let elapsed = done["elapsed_ms"].as_u64().unwrap();
    assert!(elapsed < 250, "failover after a 404 took {elapsed} ms");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn corrupt_mirror_bytes_never_reach_dest_and_the_mirror_drops_behind() {
    let stats = Stats::new();
    let bad = TestServer::start_on("127.0.0.1", stats.clone());
    let good = TestServer::start_on("127.0.0.2", stats);
    let dir = tempfile::tempdir().unwrap();
    let mut requests = vec![mirrors("f", &[bad.url("/files/"), good.url("/files/")])];
    let mut bodies = Vec::new();
    for i in 0..6u64 {
        let body = bytes(10 + i, 30_000);
        let mut corrupt = body.clone();
        corrupt[12_345] ^= 0xff;
        let name = format!("p{i}.rpm");
        bad.add_file(&name, corrupt);
        good.add_file(&name, body.clone());
        requests.push(from_mirror(
            &format!("p{i}"),
            "f",
            &name,
            &dir.path().join(&name),
            &body,
        ));
        bodies.push(body);
    }
    // One at a time, so that each download sees the health the previous ones left.
    let run = client::run(&["--max-parallel", "1"], &requests);
    for (i, body) in bodies.iter().enumerate() {
        let id = format!("p{i}");
        assert_eq!(run.done(&id)["url"], good.url(&format!("/files/p{i}.rpm")));
        assert_eq!(
            &std::fs::read(dir.path().join(format!("p{i}.rpm"))).unwrap(),
            body
        );
    }
    assert_eq!(
        starts(&run, "p0")[0],
        bad.url("/files/p0.rpm"),
        "declared order at first"
    );
    for i in 1..6 {
        let first = &starts(&run, &format!("p{i}"))[0];
        assert_eq!(
            first,
            &good.url(&format!("/files/p{i}.rpm")),
            "after a bad digest"
        );
    }
    let failures = run.of("start").len() - 6;
    assert_eq!(
        failures, 1,
        "the bad mirror was tried once, then put behind"
    );
    assert_eq!(entries(dir.path()).len(), 6, "no stray temporary files");
}

#[test]
fn every_mirror_bad_lists_every_attempt_and_others_complete() {
    let stats = Stats::new();
    let m1 = TestServer::start_on("127.0.0.1", stats.clone());
    let m2 = TestServer::start_on("127.0.0.2", stats);
    let dir = tempfile::tempdir().unwrap();
    let good = bytes(5, 1000);
    m1.add_file("ok.rpm", good.clone());
    m1.add_file("bad.rpm", bytes(6, 1000));
    m2.add_file("bad.rpm", bytes(7, 1000));
    let wanted = bytes(8, 1000);
    let requests = [
        mirrors("f", &[m1.url("/files/"), m2.url("/files/")]),
        from_mirror("bad", "f", "bad.rpm", &dir.path().join("bad.rpm"), &wanted),
        from_mirror(
            "missing",
            "f",
            "nope.rpm",
            &dir.path().join("nope.rpm"),
            &wanted,
        ),
        from_mirror("ok", "f", "ok.rpm", &dir.path().join("ok.rpm"), &good),
    ];
    let run = client::run(&[], &requests);
    run.done("ok");
    assert_eq!(run.failed_kind("bad"), "checksum_mismatch");
    let attempts = run.outcome("bad")["attempts"].as_array().unwrap().clone();
    let urls: Vec<&str> = attempts
        .iter()
        .map(|a| a["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2);
    assert!(urls.contains(&m1.url("/files/bad.rpm").as_str()));
    assert!(urls.contains(&m2.url("/files/bad.rpm").as_str()));
    assert_eq!(run.failed_kind("missing"), "http_status");
    assert_eq!(
        run.outcome("missing")["attempts"].as_array().unwrap().len(),
        2
    );
    assert_eq!(entries(dir.path()), vec!["ok.rpm"]);
    assert_eq!(run.status, 1);
}

#[test]
fn retry_after_is_honoured_while_other_transfers_go_on() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let body = bytes(3, 5000);
    server.add_file("busy", body.clone());
    let mut requests = vec![{
        let mut r = download(
            "busy",
            &server.url("/flaky/1/busy?retry_after=2"),
            &dir.path().join("busy"),
        );
        r["hashes"] = json!({"sha256": sha256_hex(&body)});
        r
    }];
    for i in 0..50 {
        server.add_file(&format!("f{i}"), bytes(100 + i, 2000));
        requests.push(download(
            &format!("f{i}"),
            &server.url(&format!("/delay/60/f{i}")),
            &dir.path().join(format!("f{i}")),
        ));
    }
    let run = client::run(&["--max-parallel", "2"], &requests);
    run.done("busy");
    assert_eq!(std::fs::read(dir.path().join("busy")).unwrap(), body);
    let seen = server.requests();
    let busy: Vec<Instant> = seen
        .iter()
        .filter(|r| r.path.contains("flaky"))
        .map(|r| r.at)
        .collect();
    assert_eq!(busy.len(), 2, "one 503, one retry");
    let wait = busy[1] - busy[0];
    assert!(
        wait >= Duration::from_secs(2),
        "retried after {wait:?}, Retry-After said 2 s"
    );
    assert!(wait < Duration::from_secs(5), "retried after {wait:?}");
    let during = seen
        .iter()
        .filter(|r| r.path.contains("delay") && r.at > busy[0] && r.at < busy[1])
        .count();
    assert!(
        during >= 20,
        "only {during} other transfers ran during the wait"
    );
    for i in 0..50 {
        run.done(&format!("f{i}"));
    }
}

#[test]
fn a_cut_body_resumes_with_range_and_verifies() {
    let server = TestServer::start();
    let body = bytes(21, 100_000);
    server.add_file("big", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big");
    let mut request = download("big", &server.url("/cutonce/60000/big"), &dest);
    request["resume"] = json!(true);
    request["size"] = json!(body.len());
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    let run = client::run(&[], &[request]);
    let done = run.done("big");
    assert_eq!(done["attempts"], 2);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("range"), None);
    assert_eq!(seen[1].header("range"), Some("bytes=60000-"));
    assert_eq!(seen[1].header("if-range"), Some(etag_of(&body).as_str()));
    assert_eq!(
        done["status"], 206,
        "the second attempt appended a 206, not a restart"
    );
    assert_eq!(
        entries(dir.path()),
        vec!["big"],
        "partial and its record are gone"
    );
}

#[test]
fn a_server_that_then_ignores_range_restarts_without_appending() {
    let server = TestServer::start();
    let body = bytes(22, 100_000);
    server.add_file("big", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big");
    let mut request = download("big", &server.url("/cutonce-norange/60000/big"), &dest);
    request["resume"] = json!(true);
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    let run = client::run(&[], &[request]);
    run.done("big");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        body,
        "restarted, not appended"
    );
    assert_eq!(server.requests()[1].header("range"), Some("bytes=60000-"));
}

#[test]
fn a_partial_survives_into_the_next_run() {
    let server = TestServer::start();
    let body = bytes(23, 80_000);
    server.add_file("big", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big");
    let mut request = download("big", &server.url("/cutonce/30000/big"), &dest);
    request["resume"] = json!(true);
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    // First run: no retries, so the cut leaves a partial behind.
    let run = client::run(&["--retries", "0"], &[request.clone()]);
    assert_eq!(run.failed_kind("big"), "truncated");
    assert_eq!(
        entries(dir.path()),
        vec![".big.fetchmux-partial", ".big.fetchmux-partial.meta"]
    );
    let run = client::run(&[], &[request]);
    run.done("big");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(server.requests()[1].header("range"), Some("bytes=30000-"));
}

#[test]
fn a_foreign_partial_is_not_trusted() {
    let server = TestServer::start();
    let body = bytes(24, 50_000);
    server.add_file("f", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    // Someone else's bytes, and even a record claiming them, at our partial's name.
    std::fs::write(dir.path().join(".f.fetchmux-partial"), &body[..20_000]).unwrap();
    std::fs::write(
        dir.path().join(".f.fetchmux-partial.meta"),
        b"{\"length\":20000}",
    )
    .unwrap();
    let mut request = download("f", &server.url("/files/f"), &dest);
    request["resume"] = json!(true);
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    let run = client::run(&[], &[request]);
    run.done("f");
    assert_eq!(
        server.requests()[0].header("range"),
        None,
        "started from zero"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(entries(dir.path()), vec!["f"]);
}

#[test]
fn a_range_request_stores_exactly_those_bytes() {
    let server = TestServer::start();
    let body = bytes(25, 70_000);
    server.add_file("wheel", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let slice = &body[1000..=66_535];
    let mut requests = Vec::new();
    for (id, route) in [("honoured", "/files/wheel"), ("ignored", "/norange/wheel")] {
        let mut r = download(id, &server.url(route), &dir.path().join(id));
        r["range"] = json!({"start": 1000, "end": 66_535});
        r["hashes"] = json!({"sha256": sha256_hex(slice)});
        requests.push(r);
    }
    let run = client::run(&[], &requests);
    assert_eq!(run.done("honoured")["status"], 206);
    assert_eq!(run.done("ignored")["status"], 200);
    assert_eq!(std::fs::read(dir.path().join("honoured")).unwrap(), slice);
    assert_eq!(std::fs::read(dir.path().join("ignored")).unwrap(), slice);
    let ranges: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.header("range").map(str::to_string))
        .collect();
    assert!(
        ranges
            .iter()
            .all(|r| r.as_deref() == Some("bytes=1000-66535")),
        "{ranges:?}"
    );
}

#[test]
fn not_modified_leaves_dest_untouched_and_reports_validators() {
    let server = TestServer::start();
    let body = bytes(26, 9000);
    server.add_file("repomd.xml", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("repomd.xml");
    // First fetch: the client learns the validators.
    let run = client::run(
        &[],
        &[download("m", &server.url("/files/repomd.xml"), &dest)],
    );
    let done = run.done("m");
    let etag = done["etag"].as_str().unwrap().to_string();
    assert_eq!(etag, etag_of(&body));
    assert!(done["last_modified"].is_string());
    let before = std::fs::read(&dest).unwrap();
    let modified = std::fs::metadata(&dest).unwrap().modified().unwrap();
    // Second fetch, conditional: 304.
    let mut request = download("m", &server.url("/files/repomd.xml"), &dest);
    request["if_none_match"] = json!(etag);
    let run = client::run(&[], &[request]);
    let done = run.done("m");
    assert_eq!(done["not_modified"], true);
    assert_eq!(done["status"], 304);
    assert_eq!(std::fs::read(&dest).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&dest).unwrap().modified().unwrap(),
        modified
    );
    assert_eq!(entries(dir.path()), vec!["repomd.xml"]);
    assert_eq!(
        server.requests()[1].header("if-none-match"),
        Some(etag.as_str())
    );
}

/// Peak resident memory of a running process, from /proc (kB).
fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn an_endless_body_stops_at_the_cap_with_flat_memory() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Helper::spawn(&["--max-size", "300M"]);
    helper.send(&download(
        "endless",
        &server.url("/endless"),
        &dir.path().join("e"),
    ));
    helper.close_stdin();
    let pid = helper.pid();
    let mut samples = Vec::new();
    let started = Instant::now();
    while let Some(rss) = vm_rss_kb(pid) {
        samples.push(rss);
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = helper.collect();
    assert_eq!(run.failed_kind("endless"), "too_large");
    assert!(samples.len() >= 5, "too few samples: {samples:?}");
    let peak = samples.iter().max().unwrap();
    assert!(
        *peak < 64 * 1024,
        "RSS peaked at {peak} kB while receiving 300 MB"
    );
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn a_trickle_fails_as_too_slow_within_the_window() {
    let server = TestServer::start();
    server.add_file("t", bytes(27, 50_000));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = client::run(
        &[
            "--low-speed-limit",
            "100",
            "--low-speed-time",
            "2",
            "--retries",
            "0",
        ],
        &[download(
            "t",
            &server.url("/trickle/10/t"),
            &dir.path().join("t"),
        )],
    );
    let elapsed = started.elapsed();
    assert_eq!(run.failed_kind("t"), "too_slow");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
}

#[test]
fn unknown_mirror_sets_are_invalid() {
    let run = client::run(
        &[],
        &[json!({"op": "download", "id": "x", "mirror": "nope", "path": "a", "dest": "/tmp/x"})],
    );
    let invalid = run.of("invalid");
    assert_eq!(invalid.len(), 1);
    assert!(invalid[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nope"));
}

#[test]
fn discovery_to_depth_six_with_the_example_client() {
    let server = TestServer::start();
    let mut files = Vec::new();
    // Six levels of indexes, each naming two plain files and (above the last level) two
    // more indexes. Built bottom-up so every index knows its children's digests.
    fn index(
        server: &TestServer,
        files: &mut Vec<(String, Vec<u8>)>,
        name: &str,
        depth: u32,
    ) -> Vec<u8> {
        let mut text = String::new();
        for i in 0..2 {
            let child = format!("{}-f{i}.bin", name.trim_end_matches(".idx"));
            let body = bytes(
                u64::from(depth) * 100 + files.len() as u64,
                500 + files.len(),
            );
            server.add_file(&child, body.clone());
            text.push_str(&format!("{} {} {child}\n", sha256_hex(&body), body.len()));
            files.push((child, body));
        }
        if depth < 5 {
            for i in 0..2 {
                let child = format!("{}-{i}.idx", name.trim_end_matches(".idx"));
                let body = index(server, files, &child, depth + 1);
                text.push_str(&format!("{} {} {child}\n", sha256_hex(&body), body.len()));
                files.push((child, body));
            }
        }
        let body = text.into_bytes();
        server.add_file(name, body.clone());
        body
    }
    let root = index(&server, &mut files, "root.idx", 0);
    files.push(("root.idx".to_string(), root.clone()));
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/discover.py");
    let output = std::process::Command::new("python3")
        .arg(example)
        .args(["--fetchmux", client::binary().to_str().unwrap()])
        .args(["--base", &server.url("/files/")])
        .args(["--out", dir.path().to_str().unwrap()])
        .args(["--root-sha256", &sha256_hex(&root)])
        .arg("root.idx")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        files.len(),
        63 + 126,
        "63 indexes over six levels, two files each"
    );
    for (name, body) in &files {
        assert_eq!(
            &std::fs::read(dir.path().join(name)).unwrap(),
            body,
            "{name}"
        );
    }
    assert!(
        stdout.contains(&format!("{} done, 0 failed", files.len())),
        "{stdout}"
    );
}

#[test]
fn a_mirror_failing_only_under_load_gets_fewer_transfers_not_a_ban() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut requests = vec![
        json!({"op": "mirrors", "set": "m", "urls": [server.url("/limited/2/")],
                                   "max_per_mirror": 6}),
    ];
    for i in 0..30 {
        let body = bytes(300 + i, 1000);
        server.add_file(&format!("f{i}"), body.clone());
        requests.push(from_mirror(
            &format!("f{i}"),
            "m",
            &format!("f{i}"),
            &dir.path().join(format!("f{i}")),
            &body,
        ));
    }
    let run = client::run(&["--max-parallel", "16", "--retries", "8"], &requests);
    for i in 0..30 {
        run.done(&format!("f{i}"));
    }
    let refused = server.requests().len() - 30;
    eprintln!("the overloaded mirror refused {refused} requests");
    assert!(
        refused > 0,
        "the server did refuse some requests under load"
    );
    // Six at a time against a server that takes two keeps being refused if the limit does
    // not come down (24 refusals with a limit that only stepped down by one; 8 with halving).
    assert!(refused < 20, "{refused} refusals: the limit did not adapt");
    assert_eq!(
        run.status, 0,
        "no download failed: the mirror was never put aside"
    );
}

#[test]
fn a_large_body_cut_short_resumes_from_every_byte_received() {
    // Over 1 MiB: the large-body path (named temporary file, coalesced writes) must still
    // record exactly the bytes received, so the resume asks for the right offset.
    let server = TestServer::start();
    let body = bytes(28, 3 << 20);
    server.add_file("iso", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("iso");
    let cut_at = 2_000_001;
    let mut request = download("iso", &server.url(&format!("/cutonce/{cut_at}/iso")), &dest);
    request["resume"] = json!(true);
    request["size"] = json!(body.len());
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    let run = client::run(&[], &[request]);
    run.done("iso");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let range = server.requests()[1].header("range").map(str::to_string);
    assert_eq!(range.as_deref(), Some(format!("bytes={cut_at}-").as_str()));
    assert_eq!(entries(dir.path()), vec!["iso"]);
}

#[test]
fn passwords_in_urls_never_leave_the_process() {
    // `url`, `urls` and a mirror set, each with a password: a download that succeeds, one
    // that fails (a 404, then a refused connection: curl's own words), a mirror that serves
    // wrong bytes until it is put aside (the stderr line), and a line refused for its URL (a
    // space in the password: the message quotes the URL, masked before it is quoted).
    let stats = Stats::new();
    let server = TestServer::start_on("127.0.0.1", stats.clone());
    let mirror = TestServer::start_on("127.0.0.2", stats);
    let with =
        |userinfo: &str, url: String| url.replacen("http://", &format!("http://{userinfo}@"), 1);
    let body = bytes(40, 5000);
    server.add_file("ok.bin", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut request = download(
        "a",
        &with("alice:s3cretA", server.url("/files/ok.bin")),
        &dir.path().join("a"),
    );
    request["size"] = json!(body.len());
    request["hashes"] = json!({"sha256": sha256_hex(&body)});
    let mut requests = vec![
        request,
        json!({"op": "download", "id": "b", "dest": dir.path().join("b"), "urls": [
            with("bob:s3cretB", server.url("/status/404")),
            "http://bob:s3cretB@127.0.0.1:1/x",
        ]}),
        mirrors("m", &[with("carol:s3cretC", mirror.url("/files/"))]),
        json!({"op": "download", "id": "d", "dest": dir.path().join("d"),
               "url": "http://dave:s3cretD x@host/"}),
    ];
    for i in 0..6u64 {
        let name = format!("m{i}");
        mirror.add_file(&name, bytes(50 + i, 100));
        let wanted = bytes(60 + i, 100);
        requests.push(from_mirror(
            &name,
            "m",
            &name,
            &dir.path().join(&name),
            &wanted,
        ));
    }
    let (run, stderr) =
        client::run_capturing(&["--retries", "1", "--max-parallel", "1"], &requests);
    for secret in ["s3cretA", "s3cretB", "s3cretC", "s3cretD"] {
        for event in &run.events {
            let line = event.to_string();
            assert!(!line.contains(secret), "{secret} printed: {line}");
        }
        for line in stderr.lines() {
            assert!(!line.contains(secret), "{secret} printed: {line}");
        }
    }

    let shown_a = with("alice:***", server.url("/files/ok.bin"));
    assert_eq!(run.done("a")["url"], shown_a);
    assert_eq!(starts(&run, "a"), vec![shown_a]);
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), body);

    assert_eq!(run.failed_kind("b"), "connect");
    let attempts = run.outcome("b")["attempts"].as_array().unwrap().clone();
    let urls: Vec<&str> = attempts
        .iter()
        .map(|a| a["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        vec![
            with("bob:***", server.url("/status/404")).as_str(),
            "http://bob:***@127.0.0.1:1/x",
        ]
    );
    assert!(starts(&run, "b")
        .iter()
        .all(|url| url.contains("//bob:***@")));

    for i in 0..6 {
        let failed = run.outcome(&format!("m{i}"));
        assert_eq!(failed["event"], "failed", "{failed}");
        for attempt in failed["attempts"].as_array().unwrap() {
            assert!(attempt["url"]
                .as_str()
                .unwrap()
                .contains("//carol:***@127.0.0.2"));
        }
    }
    let banned = format!("mirror {} failed", with("carol:***", mirror.url("/files/")));
    assert!(stderr.contains(&banned), "no ban line: {stderr}");

    let invalid = run.of("invalid");
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    let message = invalid[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("dave:***@host/"), "{message}");

    // The servers got the credentials as given.
    let basic = |user: &str| Some(format!("Basic {user}"));
    for request in server.requests() {
        let want = if request.path.starts_with("/files/") {
            basic("YWxpY2U6czNjcmV0QQ==")
        } else {
            basic("Ym9iOnMzY3JldEI=")
        };
        assert_eq!(request.header("authorization").map(str::to_string), want);
    }
    assert!(!mirror.requests().is_empty());
    for request in mirror.requests() {
        assert_eq!(
            request.header("authorization").map(str::to_string),
            basic("Y2Fyb2w6czNjcmV0Qw==")
        );
    }
}

// Issue 13 item 10: error kinds and caps.

#[test]
fn a_416_to_a_range_request_is_range_not_satisfied_and_rules_the_source_out() {
    let server = TestServer::start();
    let short = bytes(40, 5000);
    let long = bytes(41, 20_000);
    server.add_file("short", short);
    server.add_file("long", long.clone());
    let dir = tempfile::tempdir().unwrap();
    let range = json!({"start": 9000, "end": 9999});
    let mut alone = download(
        "alone",
        &server.url("/files/short"),
        &dir.path().join("alone"),
    );
    alone["range"] = range.clone();
    let mut two = json!({"op": "download", "id": "two", "dest": dir.path().join("two"),
                         "urls": [server.url("/files/short"), server.url("/files/long")]});
    two["range"] = range;
    let run = client::run(&[], &[alone, two]);
    // One source: final for it, not retried.
    assert_eq!(run.failed_kind("alone"), "range_not_satisfied");
    let failed = run.outcome("alone");
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed["error"].get("status"), None, "{failed}");
    // Two sources: the next one at once ("elsewhere"), no backoff.
    let done = run.done("two");
    assert_eq!(done["url"], server.url("/files/long"));
    assert_eq!(done["attempts"], 2);
    let elapsed = done["elapsed_ms"].as_u64().unwrap();
    assert!(elapsed < 250, "failover after a 416 took {elapsed} ms");
    assert_eq!(
        std::fs::read(dir.path().join("two")).unwrap(),
        &long[9000..=9999]
    );
    assert_eq!(entries(dir.path()), vec!["two"]);
}
#[test]
fn a_missing_or_unreadable_ca_file_is_refused_at_start() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    for bad in [dir.path().join("missing.pem"), dir.path().to_path_buf()] {
        let mut child = Command::new(client::binary())
            .arg("--ca-file")
            .arg(&bad)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // stdin stays open: a helper that started would wait for requests.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fetchmux started with --ca-file {}", bad.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(out.stdout.is_empty(), "no hello: {:?}", out.stdout);
        assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
        assert!(stderr.contains("--ca-file"), "{stderr}");
    }
}
#[test]
fn a_file_url_of_a_directory_is_not_found_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("a-directory");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("inside"), b"x").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let url = format!("file://{}", source.display());
    let run = client::run(&["--file-urls"], &[download("d", &url, &out.join("d"))]);
    assert_eq!(run.failed_kind("d"), "not_found");
    let failed = run.outcome("d");
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1, "{failed}");
    assert!(entries(&out).is_empty());
}
#[test]
fn a_304_without_dest_fails_and_writes_nothing() {
    let server = TestServer::start();
    let body = bytes(42, 3000);
    server.add_file("repomd.xml", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("repomd.xml");
    let mut request = download("m", &server.url("/files/repomd.xml"), &dest);
    request["if_none_match"] = json!(etag_of(&body));
    let run = client::run(&[], &[request]);
    assert_eq!(run.failed_kind("m"), "invalid_request");
    let failed = run.outcome("m");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("304"), "{message}");
    assert!(message.contains(&dest.display().to_string()), "{message}");
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(server.requests().len(), 1);
    assert!(entries(dir.path()).is_empty());
}
#[test]
fn max_size_caps_only_bodies_of_unknown_size() {
    let server = TestServer::start();
    let body = bytes(43, 5000);
    server.add_file("f", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("/files/f");
    let mut sized = download("sized", &url, &dir.path().join("sized"));
    sized["size"] = json!(body.len());
    sized["hashes"] = json!({"sha256": sha256_hex(&body)});
    let no_size = download("unsized", &url, &dir.path().join("unsized"));
    let mut own_cap = download("own_cap", &url, &dir.path().join("own_cap"));
    own_cap["max_size"] = json!(4999);
    let mut own_room = download("own_room", &url, &dir.path().join("own_room"));
    own_room["max_size"] = json!(5000);
    let run = client::run(&["--max-size", "1K"], &[sized, no_size, own_cap, own_room]);
    // An exact size wins over --max-size.
    assert_eq!(run.done("sized")["size"], 5000);
    assert_eq!(std::fs::read(dir.path().join("sized")).unwrap(), body);
    // Without one, --max-size, or the request's own max_size, caps the body.
    assert_eq!(run.failed_kind("unsized"), "too_large");
    assert_eq!(run.failed_kind("own_cap"), "too_large");
    assert_eq!(run.done("own_room")["size"], 5000);
}

#[test]
fn oversized_response_headers_are_final_for_the_source() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("/bigheaders/400");
    let run = client::run(&[], &[download("h", &url, &dir.path().join("h"))]);
    assert_eq!(run.failed_kind("h"), "too_large");
    let failed = run.outcome("h");
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1, "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("header"), "{message}");
    assert_eq!(server.requests().len(), 1);
    assert!(entries(dir.path()).is_empty());
}

/// Issue 13: a repeated key is refused, naming it, and nothing is fetched or written (before,
/// the last `dest` won, where another JSON parser might have taken the first).
#[test]
fn a_line_with_a_repeated_key_is_invalid_and_writes_nothing() {
    let server = TestServer::start();
    server.add_file("f", bytes(3, 100));
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let line = format!(
        r#"{{"op":"download","id":"d","url":{},"dest":{},"dest":{}}}"#,
        json!(server.url("/files/f")),
        json!(a),
        json!(b)
    );
    let headers = format!(
        r#"{{"op":"download","id":"h","url":{},"dest":{},"headers":{{"X-A":"1","x-a":"2"}}}}"#,
        json!(server.url("/files/f")),
        json!(a)
    );
    let mut helper = Helper::spawn(&[]);
    helper.send_raw(&format!("{line}\n{headers}\n"));
    let run = helper.finish();
    let invalid = run.of("invalid");
    assert_eq!(invalid.len(), 2, "{:?}", run.events);
    assert_eq!(invalid[0]["line"], 1);
    assert_eq!(invalid[0]["error"]["message"], "duplicate field `dest`");
    assert_eq!(invalid[1]["line"], 2);
    assert!(invalid[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`x-a`"));
    assert!(run.of("done").is_empty() && run.of("start").is_empty());
    assert_eq!(server.stats().total_requests(), 0);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

/// Issue 13: a `dest` that is a directory, or under a regular file, is refused at submission
/// naming `dest`, before any request goes out (it used to fail only at placement, as `io`).
#[test]
fn a_dest_that_cannot_be_a_file_is_invalid_before_any_request() {
    let server = TestServer::start();
    server.add_file("f", bytes(4, 100));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let run = client::run(
        &[],
        &[
            download("dir", &server.url("/files/f"), dir.path()),
            download("under", &server.url("/files/f"), &file.join("x")),
            download("deep", &server.url("/files/f"), &file.join("x/y")),
            // Relative to the helper's working directory (the crate's, under cargo test),
            // where `tests` is a directory: a bare name's directory is `.`, not `""`.
            download("relative", &server.url("/files/f"), Path::new("tests")),
        ],
    );
    let invalid = run.of("invalid");
    assert_eq!(invalid.len(), 4, "{:?}", run.events);
    for event in invalid {
        assert_eq!(event["error"]["kind"], "invalid_request", "{event}");
        let message = event["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("`dest`"), "{event}");
    }
    assert_eq!(server.stats().total_requests(), 0);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// Two failing mirrors do not burn a download's attempts back to back: once both were tried,
/// every further attempt waits out the backoff, whichever mirror it goes to.
#[test]
fn two_failing_mirrors_alternate_with_backoff() {
    let stats = Stats::new();
    let m1 = TestServer::start_on("127.0.0.1", stats.clone());
    let m2 = TestServer::start_on("127.0.0.2", stats);
    let body = bytes(7, 1000);
    let dir = tempfile::tempdir().unwrap();
    let run = client::run(
        &["--retries", "3", "--max-retry-wait", "1"],
        &[
            mirrors("f", &[m1.url("/flaky/100/"), m2.url("/flaky/100/")]),
            from_mirror("a", "f", "a.rpm", &dir.path().join("a.rpm"), &body),
        ],
    );
    let failed = run
        .of("failed")
        .into_iter()
        .find(|e| e["id"] == "a")
        .expect("a failed");
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 4, "{failed}");
    let mut asked: Vec<Instant> = m1
        .requests()
        .iter()
        .chain(m2.requests().iter())
        .map(|r| r.at)
        .collect();
    asked.sort();
    assert_eq!(asked.len(), 4);
    // The 2nd and 3rd transient failures back off 1 s (capped), jittered to 0.5..1 s.
    for n in 2..4 {
        let gap = asked[n] - asked[n - 1];
        assert!(
            gap >= Duration::from_millis(500),
            "attempt {} started {gap:?} after attempt {n}",
            n + 1
        );
    }
}

#[test]
fn a_mirror_put_aside_is_announced_and_announced_again_when_it_comes_back() {
    let server = TestServer::start();
    let body = bytes(41, 5_000);
    server.add_file("x.bin", body.clone());
    let dir = tempfile::tempdir().unwrap();
    // The only mirror fails its first 5 requests, then serves.
    let base = server.url("/flaky/5/");
    let mut helper = Helper::spawn(&[
        "--retries",
        "0",
        "--max-per-mirror",
        "1",
        "--put-aside-for",
        "1",
    ]);
    helper.send(&mirrors("s", std::slice::from_ref(&base)));
    for i in 0..5 {
        let dest = dir.path().join(format!("d{i}"));
        helper.send(&from_mirror(&format!("d{i}"), "s", "x.bin", &dest, &body));
    }
    let aside = helper.wait_for("mirror aside", |e| e["event"] == "mirror");
    assert_eq!(aside["state"], "aside", "{aside}");
    assert_eq!(aside["url"], base.as_str());
    assert_eq!(aside["failures"], 5);
    assert_eq!(aside["back_in_ms"], 1000);
    // While it is aside, a download of the set has nowhere to go.
    helper.send(&from_mirror(
        "early",
        "s",
        "x.bin",
        &dir.path().join("early"),
        &body,
    ));
    let ended = |id: &'static str| {
        move |e: &Value| e["id"] == id && (e["event"] == "done" || e["event"] == "failed")
    };
    let early = helper.wait_for("early's end", ended("early"));
    assert_eq!(early["event"], "failed", "{early}");
    assert!(early["error"]["message"]
        .as_str()
        .unwrap()
        .contains("put aside"));

    let back = helper.wait_for("mirror back", |e| e["event"] == "mirror");
    assert_eq!(back["state"], "back", "{back}");
    assert_eq!(back["url"], base.as_str());
    helper.send(&from_mirror(
        "late",
        "s",
        "x.bin",
        &dir.path().join("late"),
        &body,
    ));
    let late = helper.wait_for("late's end", ended("late"));
    assert_eq!(late["event"], "done", "{late}");
    assert_eq!(std::fs::read(dir.path().join("late")).unwrap(), body);

    let run = helper.finish();
    for i in 0..5 {
        assert_eq!(run.failed_kind(&format!("d{i}")), "http_status");
    }
    assert_eq!(run.of("mirror").len(), 2, "{:?}", run.of("mirror"));
}

#[test]
fn done_lists_the_attempts_that_failed_before_it() {
    let server = TestServer::start();
    let body = bytes(42, 3_000);
    server.add_file("y.bin", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let broken = server.url("/status/503");
    let good = server.url("/files/y.bin");
    let run = client::run(
        &[],
        &[
            json!({"op": "download", "id": "y", "urls": [broken, good],
                   "dest": dir.path().join("y"), "hashes": {"sha256": sha256_hex(&body)}}),
            download("z", &server.url("/files/y.bin"), &dir.path().join("z")),
        ],
    );
    let y = run.done("y");
    assert_eq!(y["attempts"], 2);
    let failures = y["failures"].as_array().expect("failures listed");
    assert_eq!(failures.len(), 1, "{y}");
    assert_eq!(failures[0]["url"], broken.as_str());
    assert_eq!(failures[0]["error"]["kind"], "http_status");
    assert_eq!(failures[0]["error"]["status"], 503);
    // A first attempt that succeeds has nothing to list.
    assert!(run.done("z").get("failures").is_none(), "{}", run.done("z"));
}

#[test]
fn a_mirror_limit_above_max_per_host_is_lowered_to_it_and_said() {
    let server = TestServer::start();
    let body = bytes(43, 2_000);
    server.add_file("w.bin", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut requests = vec![json!({"op": "mirrors", "set": "s",
                                   "urls": [server.url("/delay/300/")], "max_per_mirror": 6})];
    for i in 0..6 {
        let dest = dir.path().join(format!("w{i}"));
        requests.push(from_mirror(&format!("w{i}"), "s", "w.bin", &dest, &body));
    }
    let (run, stderr) = client::run_capturing(&["--max-per-host", "2"], &requests);
    assert_eq!(run.of("done").len(), 6, "{:?}", run.events);
    assert!(
        server.peak_connections() <= 2,
        "{}",
        server.peak_connections()
    );
    assert!(
        stderr.contains("max_per_mirror 6 is above --max-per-host 2; using 2"),
        "{stderr}"
    );
}
