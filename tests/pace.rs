//! Time and rate: the response timeout against a server that accepts and never answers
//! (with the low-speed guard off), a download's time limit (`--max-time`, and a request's
//! own `timeout` over it), and receive rates (a request's `max_speed`, the process-wide
//! `--max-speed` shared by the running transfers) measured against Debian's nginx.
//!
//! Timings get wide margins where the machine's load can only make things slower, and the
//! ±15 % the rate tests allow where a limit must hold.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::{self, bytes, download, sha256_hex, Helper};
use support::nginx::Nginx;
use support::server::TestServer;

/// The error messages of `id`'s failed attempts, in order.
fn attempt_messages(run: &client::Run, id: &str) -> Vec<String> {
    run.outcome(id)["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["error"]["kind"], "timeout", "{a}");
            a["error"]["message"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_server_that_never_answers_fails_within_the_response_timeout_even_without_the_low_speed_guard()
{
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = client::run(
        &[
            "--low-speed-limit",
            "0",
            "--response-timeout",
            "2",
            "--retries",
            "1",
            "--max-retry-wait",
            "1",
        ],
        &[download(
            "silent",
            &server.url("/silent"),
            &dir.path().join("x"),
        )],
    );
    let elapsed = started.elapsed();
    assert_eq!(run.failed_kind("silent"), "timeout");
    let messages = attempt_messages(&run, "silent");
    assert_eq!(messages.len(), 2, "{:?}", run.events);
    assert!(
        messages.iter().all(|m| m.contains("--response-timeout")),
        "{messages:?}"
    );
    // Two attempts of 2 s and a backoff of at most 1 s, not forever (or 2 × 30 s).
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );
    // The requests did reach the server: it is the answer that never came.
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/silent")
            .count(),
        2
    );
    assert!(client::entries(dir.path()).is_empty());
}

#[test]
fn max_time_ends_a_slow_but_moving_body_at_the_limit() {
    let server = TestServer::start();
    // 1 MB at 20 kB/s: 50 s, well above the low-speed guard the whole time.
    server.add_file("slow", bytes(1, 1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = client::run(
        &["--max-time", "3", "--retries", "3"],
        &[download(
            "slow",
            &server.url("/trickle/20000/slow"),
            &dir.path().join("slow"),
        )],
    );
    let elapsed = started.elapsed();
    let failed = run.outcome("slow");
    assert_eq!(run.failed_kind("slow"), "timeout", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("time limit"), "{message}");
    // The limit is per download: no retry after it ran out.
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1, "{failed}");
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
    assert!(client::entries(dir.path()).is_empty());
}

#[test]
fn a_requests_timeout_beats_max_time_both_ways() {
    let server = TestServer::start();
    server.add_file("long", bytes(2, 200_000));
    server.add_file("six", bytes(3, 60_000));
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Helper::spawn(&["--max-time", "4"]);
    let started = Instant::now();
    // 20 s at 10 kB/s, with a limit of 1 s of its own.
    let mut short = download(
        "short",
        &server.url("/trickle/10000/long"),
        &dir.path().join("long"),
    );
    short["timeout"] = json!(1);
    // 6 s at 10 kB/s, with no limit of its own (0) despite --max-time 4.
    let mut unlimited = download(
        "unlimited",
        &server.url("/trickle/10000/six"),
        &dir.path().join("six"),
    );
    unlimited["timeout"] = json!(0);
    unlimited["hashes"] = json!({"sha256": sha256_hex(&bytes(3, 60_000))});
    helper.send(&short);
    helper.send(&unlimited);
    let failed = helper.wait_for("failed", |e| e["event"] == "failed");
    assert_eq!(failed["id"], "short");
    assert_eq!(failed["error"]["kind"], "timeout");
    let at = started.elapsed();
    assert!(
        at >= Duration::from_secs(1) && at < Duration::from_millis(3500),
        "{at:?}"
    );
    let run = helper.finish();
    run.done("unlimited");
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(
        std::fs::read(dir.path().join("six")).unwrap(),
        bytes(3, 60_000)
    );
}

#[test]
fn a_timeout_that_is_not_a_number_of_seconds_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = download("bad", "http://127.0.0.1:1/x", &dir.path().join("x"));
    bad["timeout"] = json!(-1);
    let mut text = download("text", "http://127.0.0.1:1/x", &dir.path().join("y"));
    text["timeout"] = json!("10");
    let run = client::run(&[], &[bad, text]);
    let features = run.of("hello")[0]["features"].as_array().unwrap().clone();
    assert!(features.contains(&json!("timeout")) && features.contains(&json!("max_speed")));
    let invalid = run.of("invalid");
    assert_eq!(invalid.len(), 2);
    for event in invalid {
        let message = event["error"]["message"].as_str().unwrap();
        assert!(message.contains("`timeout`"), "{message}");
    }
}

const MIB: usize = 1 << 20;

/// nginx serving `name → size` files of pseudo-random bytes.
fn nginx_with(files: &[(&str, usize)]) -> (tempfile::TempDir, Nginx) {
    let root = tempfile::tempdir().unwrap();
    for (i, (name, size)) in files.iter().enumerate() {
        std::fs::write(root.path().join(name), bytes(100 + i as u64, *size)).unwrap();
    }
    let nginx = Nginx::start(root.path());
    (root, nginx)
}

/// Download `files` from nginx in one run; `done.elapsed_ms` of each, in seconds.
fn timed_run(
    nginx: &Nginx,
    files: &[(&str, usize)],
    args: &[&str],
    each: impl Fn(&mut Value),
) -> Vec<f64> {
    timed_run_over(nginx, false, files, args, each)
}

/// [`timed_run`] over plain HTTP/1.1, or over https (HTTP/2, the test's CA trusted).
fn timed_run_over(
    nginx: &Nginx,
    https: bool,
    files: &[(&str, usize)],
    args: &[&str],
    each: impl Fn(&mut Value),
) -> Vec<f64> {
    let out = tempfile::tempdir().unwrap();
    let requests: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(i, (name, size))| {
            let url = match https {
                true => format!("https://127.0.0.1:{}/{name}", nginx.https_port),
                false => format!("http://127.0.0.1:{}/{name}", nginx.http_port),
            };
            let mut r = download(name, &url, &out.path().join(name));
            r["hashes"] = json!({"sha256": sha256_hex(&bytes(100 + i as u64, *size))});
            each(&mut r);
            r
        })
        .collect();
    let cert = nginx.cert();
    let mut args = args.to_vec();
    if https {
        args.extend(["--ca-file", cert.to_str().unwrap()]);
    }
    // Timed from the moment the first attempt starts (its `start` event is read), not from
    // the spawn: starting a debug binary on a loaded machine is no part of the rate.
    let mut helper = Helper::spawn(&args);
    for request in &requests {
        helper.send(request);
    }
    helper.close_stdin();
    let mut started = None;
    let mut ended = std::collections::HashMap::new();
    while ended.len() < files.len() {
        let event = helper
            .next_event(Duration::from_secs(120))
            .expect("every download ends within 120 s");
        let now = Instant::now();
        match event["event"].as_str() {
            Some("start") => {
                started.get_or_insert(now);
            }
            Some("done") => {
                ended.insert(event["id"].as_str().unwrap().to_string(), now);
            }
            Some("failed") => panic!("{event}"),
            _ => {}
        }
    }
    let run = helper.collect();
    assert_eq!(run.status, 0, "{:?}", run.events);
    let started = started.expect("a start event");
    let took: Vec<f64> = files
        .iter()
        .map(|(name, _)| (ended[*name] - started).as_secs_f64())
        .collect();
    eprintln!("{args:?}: {files:?} took {took:?} s");
    took
}

fn within_15_percent(measured: f64, expected: f64) -> bool {
    (measured - expected).abs() <= 0.15 * expected
}

#[test]
fn a_requests_max_speed_holds_its_transfer_to_that_rate() {
    let files = [("one.bin", 12 * MIB)];
    let (_root, nginx) = nginx_with(&files);
    let took = timed_run(&nginx, &files, &[], |r| r["max_speed"] = json!(2 * MIB));
    // 12 MiB at 2 MiB/s (long enough that the limiter's first quarter second of allowance
    // is well inside the 15 %).
    assert!(within_15_percent(took[0], 6.0), "{took:?}");
}

#[test]
fn max_speed_is_shared_evenly_by_the_running_transfers() {
    let files = [
        ("a.bin", 3 * MIB),
        ("b.bin", 3 * MIB),
        ("c.bin", 3 * MIB),
        ("d.bin", 3 * MIB),
    ];
    let (_root, nginx) = nginx_with(&files);
    let took = timed_run(&nginx, &files, &["--max-speed", "1M"], |_| {});
    // 12 MiB at 1 MiB/s in all: 12 s; each a quarter of the rate, so all end together.
    let last = took.iter().cloned().fold(0.0, f64::max);
    let first = took.iter().cloned().fold(f64::MAX, f64::min);
    assert!(within_15_percent(last, 12.0), "{took:?}");
    assert!(
        first >= 0.85 * last,
        "one transfer got more than its share: {took:?}"
    );
}

#[test]
fn max_speed_is_rebalanced_as_transfers_end() {
    let files = [("s.bin", 2 * MIB), ("m.bin", 4 * MIB), ("l.bin", 6 * MIB)];
    let (_root, nginx) = nginx_with(&files);
    let took = timed_run(&nginx, &files, &["--max-speed", "1024K"], |_| {});
    // Three at 1/3 MiB/s until the 2 MiB one ends (6 s); the other two at 1/2 MiB/s until
    // the 4 MiB one ends (10 s); the last alone at 1 MiB/s (12 s).
    for (measured, expected) in took.iter().zip([6.0, 10.0, 12.0]) {
        assert!(within_15_percent(*measured, expected), "{took:?}");
    }
}

#[test]
fn max_speed_is_shared_by_http2_streams_of_one_connection_too() {
    let files = [("a.bin", 4 * MIB), ("b.bin", 4 * MIB), ("c.bin", 4 * MIB)];
    let (_root, nginx) = nginx_with(&files);
    let took = timed_run_over(&nginx, true, &files, &["--max-speed", "2M"], |_| {});
    // 12 MiB at 2 MiB/s: 6 s, the three streams ending together.
    let last = took.iter().cloned().fold(0.0, f64::max);
    let first = took.iter().cloned().fold(f64::MAX, f64::min);
    assert!(within_15_percent(last, 6.0), "{took:?}");
    assert!(
        first >= 0.85 * last,
        "one stream got more than its share: {took:?}"
    );
    let protocols: Vec<String> = nginx.agents().into_iter().map(|(p, _)| p).collect();
    assert_eq!(protocols, vec!["HTTP/2.0"; 3]);
}
