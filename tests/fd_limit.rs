//! A low file-descriptor limit, for real: the helper runs under RLIMIT_NOFILE set in the child
//! before exec, against Debian's nginx, with far more downloads and far higher limits than
//! the descriptors allow (issue 13, item 1). Every download must end `done` with its bytes
//! verified, no attempt lost to EMFILE, and stderr must say once what was lowered and why.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use support::client::{bytes, sha256_hex, Helper, Run};
use support::nginx::Nginx;

const DOWNLOADS: usize = 1_000;

/// The files nginx serves: mostly small ones (held in memory), every 25th of 300 KiB
/// (an unnamed temporary file, hashed by a worker) and every 200th of 1.5 MiB (a named
/// temporary file): each way a body can hold a descriptor besides its connection.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    (0..DOWNLOADS)
        .map(|i| {
            let len = match i {
                i if i % 200 == 7 => 1536 << 10,
                i if i % 25 == 3 => 300 << 10,
                _ => 2048 + i,
            };
            let name = format!("f{i:04}.bin");
            let body = bytes(i as u64, len);
            std::fs::write(root.join(&name), &body).unwrap();
            (name, body)
        })
        .collect()
}

struct Setup {
    _root: tempfile::TempDir,
    out: tempfile::TempDir,
    nginx: Nginx,
    files: Vec<(String, Vec<u8>)>,
    stderr: PathBuf,
}

fn setup() -> Setup {
    let root = tempfile::tempdir().unwrap();
    let files = files(root.path());
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let stderr = out.path().join("stderr.txt");
    Setup {
        _root: root,
        out,
        nginx,
        files,
        stderr,
    }
}

/// Every request, half by URL and half through a one-mirror set (a mirror that EMFILE
/// counted against would be put aside, and its downloads would fail).
fn requests(s: &Setup) -> Vec<Value> {
    let base = format!("http://127.0.0.1:{}/", s.nginx.http_port);
    let mut requests =
        vec![json!({"op": "mirrors", "set": "m", "urls": [base], "max_per_mirror": 200})];
    for (i, (name, body)) in s.files.iter().enumerate() {
        let dest = s.out.path().join(name);
        let mut r = if i % 2 == 0 {
            json!({"op": "download", "id": name, "url": format!("{base}{name}"), "dest": dest})
        } else {
            json!({"op": "download", "id": name, "mirror": "m", "path": name, "dest": dest})
        };
        r["size"] = json!(body.len());
        r["hashes"] = json!({"sha256": sha256_hex(body)});
        requests.push(r);
    }
    requests
}

/// Run the helper under `soft`/`hard` descriptor limits with limits of 200 everywhere.
fn run_limited(s: &Setup, soft: u64, hard: u64, env: &[(&str, &str)]) -> (Run, String) {
    let args = [
        "--max-parallel",
        "200",
        "--max-per-host",
        "200",
        "--max-per-mirror",
        "200",
    ];
    let mut helper = Helper::spawn_with_fd_limit(&args, soft, hard, &s.stderr, env);
    let mut text = String::new();
    for request in requests(s) {
        text.push_str(&request.to_string());
        text.push('\n');
    }
    let started = Instant::now();
    helper.send_raw(&text);
    let run = helper.finish();
    eprintln!(
        "limit {soft}/{hard}: {} downloads in {:?}",
        DOWNLOADS,
        started.elapsed()
    );
    let stderr = std::fs::read_to_string(&s.stderr).unwrap();
    (run, stderr)
}

/// Every download `done` on its first attempt, every dest exactly its bytes.
fn assert_all_done(s: &Setup, run: &Run) {
    run.assert_framing();
    let failed = run.of("failed");
    assert!(
        failed.is_empty(),
        "{} of {DOWNLOADS} failed, the first: {}",
        failed.len(),
        failed[0]
    );
    assert_eq!(run.status, 0, "bye: {}", run.bye());
    for (name, body) in &s.files {
        let done = run.done(name);
        // Running out of descriptors is not a failed attempt: nothing was burnt.
        assert_eq!(done["attempts"], json!(1), "{name}: {done}");
        let on_disk = std::fs::read(s.out.path().join(name)).unwrap();
        assert!(on_disk == *body, "{name} differs from what nginx served");
    }
    assert_eq!(run.bye()["ok"], json!(DOWNLOADS));
}

/// Lines of stderr that say the limits were lowered for the descriptors.
fn lowered_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("file descriptors"))
        .collect()
}

/// The line stderr has about descriptors, asserting that there is exactly one.
fn the_one_line_about_descriptors(stderr: &str) -> &str {
    let lines = lowered_lines(stderr);
    assert_eq!(
        lines.len(),
        1,
        "one line on stderr about descriptors: {stderr}"
    );
    lines[0]
}

#[test]
fn a_low_soft_limit_is_raised_and_the_limits_fit_what_remains() {
    let s = setup();
    let (run, stderr) = run_limited(&s, 64, 256, &[]);
    assert_all_done(&s, &run);
    let line = the_one_line_about_descriptors(&stderr);
    // What was asked, what is used, why, and how to raise it.
    for part in [
        "instead of 200",
        "raised the soft limit from 64 to 256",
        "ulimit -n",
    ] {
        assert!(line.contains(part), "`{part}` missing: {line}");
    }
}

#[test]
fn a_low_hard_limit_lowers_the_limits_and_every_download_completes() {
    let s = setup();
    let (run, stderr) = run_limited(&s, 64, 64, &[]);
    assert_all_done(&s, &run);
    let line = the_one_line_about_descriptors(&stderr);
    for part in [
        "--max-parallel",
        "instead of 200",
        "limit of 64",
        "hard limit",
        "ulimit -n",
    ] {
        assert!(line.contains(part), "`{part}` missing: {line}");
    }
}

#[test]
fn running_out_of_descriptors_requeues_and_lowers_concurrency() {
    // Without the budget made at start, sockets and files run out for real (EMFILE on
    // socket() inside libcurl, and on opening temporary files): each such download waits
    // in the queue, the engine runs fewer at once, and still every one completes.
    let s = setup();
    let (run, stderr) = run_limited(&s, 64, 64, &[("FETCHMUX_FD_BUDGET", "off")]);
    assert_all_done(&s, &run);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ran out of file descriptors"))
        .collect();
    assert_eq!(lines.len(), 1, "one line on stderr about EMFILE: {stderr}");
}

#[test]
fn over_http2_the_transfers_at_once_fit_the_descriptors_too() {
    // One HTTP/2 connection carries up to 100 streams, and each body of 128 KiB or more
    // holds a temporary file: the budget caps the transfers at once, not only connections,
    // so that the descriptors never run out (no "ran out" line on stderr).
    let root = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            let name = format!("h{i:03}.bin");
            let body = bytes(10_000 + i, (150 << 10) + i as usize);
            std::fs::write(root.path().join(&name), &body).unwrap();
            (name, body)
        })
        .collect();
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let stderr_path = out.path().join("stderr.txt");
    let cert = nginx.cert();
    let args = [
        "--ca-file",
        cert.to_str().unwrap(),
        "--max-parallel",
        "200",
        "--max-per-host",
        "200",
    ];
    let mut helper = Helper::spawn_with_fd_limit(&args, 64, 64, &stderr_path, &[]);
    let mut text = String::new();
    for (name, body) in &files {
        let url = format!("https://127.0.0.1:{}/{name}", nginx.https_port);
        let request = json!({"op": "download", "id": name, "url": url,
            "dest": out.path().join(name), "size": body.len(),
            "hashes": {"sha256": sha256_hex(body)}});
        text.push_str(&format!("{request}\n"));
    }
    helper.send_raw(&text);
    let run = helper.finish();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        run.of("failed").is_empty(),
        "{:?}",
        run.of("failed").first()
    );
    assert_eq!(run.status, 0);
    for (name, body) in &files {
        assert_eq!(run.done(name)["attempts"], json!(1), "{name}");
        assert!(
            std::fs::read(out.path().join(name)).unwrap() == *body,
            "{name}"
        );
    }
    let lines = lowered_lines(&stderr);
    assert_eq!(lines.len(), 1, "only the line about the limits: {stderr}");
    let log = nginx.access_log();
    assert!(
        log.iter().all(|(_, proto, _, _)| proto == "HTTP/2.0"),
        "all over HTTP/2"
    );
}
