//! Credentials and custom headers: `auth` per request and per mirror set, user:password
//! URLs, `--netrc` / `--netrc-file`, and the rule that a request's headers and credentials go
//! to its own origin (scheme, host, port) only, never to another one after a redirect. The
//! evidence is what the servers saw: real nginx with `auth_basic` (its log names the user and
//! the `Authorization` and `X-Api-Key` each request carried), and the test server, which
//! records every request's headers.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::client::{self, bytes, download, sha256_hex};
use support::nginx::{Nginx, PASSWORD, USER};
use support::server::{RecordedRequest, Stats, TestServer};

/// `user:password` as HTTP Basic sends it.
fn basic(user: &str, password: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
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

/// The test server's URL that redirects (302) to `to`.
fn redirect_to(server: &TestServer, to: &str) -> String {
    server.url(&format!("/redirect?to={}", percent_encode(to)))
}

/// The requests `server` saw for `path`.
fn seen(server: &TestServer, path: &str) -> Vec<RecordedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

/// Run the helper over `requests`, with stdout and stderr captured: (events, stderr, status).
fn run_captured(args: &[&str], requests: &[Value]) -> (Vec<Value>, String, i32) {
    let mut child = Command::new(client::binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for request in requests {
            writeln!(stdin, "{request}").unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let events: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    events.iter().for_each(client::assert_schema);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (events, stderr, output.status.code().unwrap_or(-1))
}

/// The terminal event of `id` among `events`.
fn outcome<'a>(events: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["id"] == id && (e["event"] == "done" || e["event"] == "failed"))
        .collect();
    assert_eq!(found.len(), 1, "want one outcome for {id}: {events:?}");
    found[0]
}

fn served(root: &Path, name: &str, seed: u64) -> Vec<u8> {
    let body = bytes(seed, 4000 + seed as usize);
    std::fs::write(root.join(name), &body).unwrap();
    body
}

#[test]
fn basic_auth_against_nginx_right_credentials_are_done_wrong_ones_fail_as_401() {
    let root = tempfile::tempdir().unwrap();
    let body = served(root.path(), "p.rpm", 1);
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let private = format!("http://127.0.0.1:{}/private/p.rpm", nginx.http_port);
    let with_auth = |id: &str, user: &str, password: &str| {
        let mut r = download(id, &private, &out.path().join(id));
        r["auth"] = json!({"user": user, "password": password});
        r["hashes"] = json!({"sha256": sha256_hex(&body)});
        r
    };
    let userinfo = private.replacen("http://", &format!("http://{USER}:{PASSWORD}@"), 1);
    let requests = vec![
        with_auth("right", USER, PASSWORD),
        with_auth("wrong", USER, "not-the-Password-9"),
        download("none", &private, &out.path().join("none")),
        download("userinfo", &userinfo, &out.path().join("userinfo")),
        json!({"op": "mirrors", "set": "m", "auth": {"user": USER, "password": PASSWORD},
               "urls": [format!("http://127.0.0.1:{}/private/", nginx.http_port)]}),
        json!({"op": "download", "id": "mirror", "mirror": "m", "path": "p.rpm",
               "dest": out.path().join("mirror"), "hashes": {"sha256": sha256_hex(&body)}}),
    ];
    let (events, stderr, status) = run_captured(&["--retries", "0"], &requests);
    assert_eq!(status, 1, "{events:?}");
    let features = events[0]["features"].as_array().unwrap();
    assert!(features.contains(&json!("auth")), "{features:?}");
    for id in ["right", "userinfo", "mirror"] {
        assert_eq!(outcome(&events, id)["event"], "done", "{id}: {events:?}");
        assert_eq!(std::fs::read(out.path().join(id)).unwrap(), body, "{id}");
    }
    for id in ["wrong", "none"] {
        let failed = outcome(&events, id);
        assert_eq!(failed["error"]["kind"], "http_status", "{failed}");
        assert_eq!(failed["error"]["status"], 401, "{failed}");
        let message = failed["error"]["message"].as_str().unwrap();
        assert!(message.contains("credentials"), "{message}");
        assert!(!out.path().join(id).exists());
    }
    // What nginx saw: the user on the three that passed, wrong or no credentials on the rest.
    let log = nginx.credentials_log();
    let passed: Vec<_> = log.iter().filter(|r| r.status == 200).collect();
    assert_eq!(passed.len(), 3, "{log:?}");
    assert!(
        passed.iter().all(|r| r.user.as_deref() == Some(USER)),
        "{log:?}"
    );
    assert_eq!(log.iter().filter(|r| r.status == 401).count(), 2, "{log:?}");
    // The password appears in no event and no stderr line.
    let stdout: String = events.iter().map(|e| e.to_string()).collect();
    for secret in [PASSWORD, "not-the-Password-9"] {
        assert!(!stdout.contains(secret), "{secret} in events: {stdout}");
        assert!(!stderr.contains(secret), "{secret} on stderr: {stderr}");
    }
}

#[test]
fn custom_headers_and_credentials_stay_with_their_origin_after_a_redirect() {
    // A on 127.0.0.1, B on another port of the same host (another origin), C on 127.0.0.2.
    let stats = Stats::new();
    let a = TestServer::start_on("127.0.0.1", stats.clone());
    let b = TestServer::start_on("127.0.0.1", stats.clone());
    let c = TestServer::start_on("127.0.0.2", stats);
    let body = bytes(7, 3000);
    for server in [&a, &b, &c] {
        server.add_file("f", body.clone());
    }
    let out = tempfile::tempdir().unwrap();
    let request = |id: &str, url: String| {
        let mut r = download(id, &url, &out.path().join(id));
        r["headers"] =
            json!({"X-Api-Key": format!("key-{id}"), "Authorization": format!("Bearer tok-{id}")});
        r["hashes"] = json!({"sha256": sha256_hex(&body)});
        r
    };
    let mut follow = request("follow", redirect_to(&a, &c.url("/files/f?follow")));
    follow["headers_follow_redirects"] = json!(true);
    // With credentials too, the engine follows: the headers go along, Cookie does not.
    let mut follow_auth = download(
        "follow-auth",
        &redirect_to(&a, &c.url("/files/f?follow-auth")),
        &out.path().join("follow-auth"),
    );
    follow_auth["headers"] = json!({"X-Api-Key": "key-fa", "Cookie": "session=fa"});
    follow_auth["headers_follow_redirects"] = json!(true);
    follow_auth["auth"] = json!({"user": "u", "password": "pw-fa"});
    let mut auth = download(
        "auth",
        &redirect_to(&a, &b.url("/files/f?auth")),
        &out.path().join("auth"),
    );
    auth["auth"] = json!({"user": "u", "password": "pw-auth"});
    let userinfo = redirect_to(&a, &c.url("/files/f?userinfo")).replacen(
        "http://",
        "http://ui:pw-userinfo@",
        1,
    );
    let requests = vec![
        // To another port, and to another host: no X-Api-Key, no Authorization.
        request("port", redirect_to(&a, &b.url("/files/f?port"))),
        request("host", redirect_to(&a, &c.url("/files/f?host"))),
        // A redirect within the origin keeps them.
        request("same", redirect_to(&a, &a.url("/files/f?same"))),
        // Told to, the headers go along, but Authorization stays home (as with curl).
        follow,
        follow_auth,
        auth,
        download("userinfo", &userinfo, &out.path().join("userinfo")),
    ];
    let run = client::run(&[], &requests);
    assert_eq!(run.status, 0, "{:?}", run.events);
    for id in [
        "port",
        "host",
        "same",
        "follow",
        "follow-auth",
        "auth",
        "userinfo",
    ] {
        assert_eq!(std::fs::read(out.path().join(id)).unwrap(), body, "{id}");
        // `url` names the URL the attempt started from.
        assert!(run.done(id)["url"]
            .as_str()
            .unwrap()
            .contains("/redirect?to="));
    }
    let one = |server: &TestServer, path: &str| {
        let seen = seen(server, path);
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        seen.into_iter().next().unwrap()
    };
    for (server, path) in [(&b, "/files/f?port"), (&c, "/files/f?host")] {
        let r = one(server, path);
        assert_eq!(r.header("x-api-key"), None, "{path}: {r:?}");
        assert_eq!(r.header("authorization"), None, "{path}: {r:?}");
    }
    let r = one(&a, "/files/f?same");
    assert_eq!(r.header("x-api-key"), Some("key-same"), "{r:?}");
    assert_eq!(r.header("authorization"), Some("Bearer tok-same"), "{r:?}");
    let r = one(&c, "/files/f?follow");
    assert_eq!(r.header("x-api-key"), Some("key-follow"), "{r:?}");
    assert_eq!(r.header("authorization"), None, "{r:?}");
    let r = one(&c, "/files/f?follow-auth");
    assert_eq!(r.header("x-api-key"), Some("key-fa"), "{r:?}");
    assert_eq!(r.header("cookie"), None, "{r:?}");
    assert_eq!(r.header("authorization"), None, "{r:?}");
    assert_eq!(one(&b, "/files/f?auth").header("authorization"), None);
    assert_eq!(one(&c, "/files/f?userinfo").header("authorization"), None);
    // The first hops, on A, had them all.
    let first_hops = a.requests();
    let first = |needle: &str| {
        first_hops
            .iter()
            .find(|r| r.path.starts_with("/redirect") && r.path.contains(needle))
            .unwrap_or_else(|| panic!("no first hop for {needle}"))
            .clone()
    };
    assert_eq!(first("3Fport").header("x-api-key"), Some("key-port"));
    assert_eq!(
        first("3Fauth").header("authorization"),
        Some(basic("u", "pw-auth").as_str())
    );
    assert_eq!(
        first("3Fuserinfo").header("authorization"),
        Some(basic("ui", "pw-userinfo").as_str())
    );
}

#[test]
fn redirects_followed_by_the_engine_keep_the_count_and_the_scheme_rules() {
    let server = TestServer::start();
    server.add_file("f", bytes(8, 100));
    let out = tempfile::tempdir().unwrap();
    let with_key = |id: &str, url: String| {
        let mut r = download(id, &url, &out.path().join(id));
        r["headers"] = json!({"X-Api-Key": "k"});
        r
    };
    let two_hops = redirect_to(&server, &redirect_to(&server, &server.url("/files/f")));
    let requests = vec![
        with_key("two", two_hops.clone()),
        with_key("file", redirect_to(&server, "file:///etc/passwd")),
        with_key("ftp", redirect_to(&server, "ftp://127.0.0.1:1/x")),
    ];
    let run = client::run(&["--retries", "0", "--max-redirects", "1"], &requests);
    assert_eq!(run.failed_kind("two"), "too_many_redirects");
    assert_eq!(run.failed_kind("file"), "unsupported_scheme");
    assert_eq!(run.failed_kind("ftp"), "unsupported_scheme");
    assert!(!out.path().join("file").exists());
    // Within the limit the same chain is followed to the end.
    let run = client::run(&["--max-redirects", "2"], &[with_key("two", two_hops)]);
    assert_eq!(
        std::fs::read(out.path().join("two")).unwrap(),
        bytes(8, 100)
    );
    assert_eq!(run.status, 0);
}

#[test]
fn a_redirect_from_https_to_http_is_refused_with_credentials_too() {
    let root = tempfile::tempdir().unwrap();
    served(root.path(), "p.rpm", 2);
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}/to-http/p.rpm", nginx.https_port);
    let mut request = download("down", &url, &out.path().join("down"));
    request["auth"] = json!({"user": USER, "password": PASSWORD});
    let cert = nginx.cert();
    let run = client::run(
        &["--retries", "0", "--ca-file", cert.to_str().unwrap()],
        &[request],
    );
    assert_eq!(run.failed_kind("down"), "unsupported_scheme");
    // nginx saw the https request only; nothing reached plain http.
    let log = nginx.access_log();
    assert_eq!(log.len(), 1, "{log:?}");
}

#[test]
fn a_redirect_within_nginx_keeps_credentials_one_to_another_origin_drops_them() {
    let root = tempfile::tempdir().unwrap();
    let body = served(root.path(), "p.rpm", 3);
    let nginx = Nginx::start(root.path());
    let other = TestServer::start_on("127.0.0.2", Stats::new());
    other.add_file("p.rpm", body.clone());
    let out = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}", nginx.http_port);
    let with_auth = |id: &str, url: String| {
        let mut r = download(id, &url, &out.path().join(id));
        r["auth"] = json!({"user": USER, "password": PASSWORD});
        r["headers"] = json!({"X-Api-Key": "nginx-only"});
        r
    };
    let requests = vec![
        with_auth("same", format!("{base}/to-private/p.rpm")),
        with_auth("away", format!("{base}/away/{}/files/p.rpm", other.addr())),
    ];
    let run = client::run(&[], &requests);
    assert_eq!(run.status, 0, "{:?}", run.events);
    assert_eq!(std::fs::read(out.path().join("same")).unwrap(), body);
    assert_eq!(std::fs::read(out.path().join("away")).unwrap(), body);
    let log = nginx.credentials_log();
    let private: Vec<_> = log.iter().filter(|r| r.uri == "/private/p.rpm").collect();
    assert_eq!(private.len(), 1, "{log:?}");
    assert_eq!(private[0].status, 200);
    assert_eq!(private[0].user.as_deref(), Some(USER));
    assert_eq!(private[0].api_key.as_deref(), Some("nginx-only"));
    let away = seen(&other, "/files/p.rpm");
    assert_eq!(away.len(), 1, "{away:?}");
    assert_eq!(away[0].header("authorization"), None, "{away:?}");
    assert_eq!(away[0].header("x-api-key"), None, "{away:?}");
}

#[test]
fn one_requests_credentials_never_ride_into_the_next_request_on_a_reused_handle() {
    // One transfer at a time, so the second request gets the first one's handle.
    let a = TestServer::start_on("127.0.0.1", Stats::new());
    let b = TestServer::start_on("127.0.0.2", Stats::new());
    for server in [&a, &b] {
        server.add_file("f", bytes(9, 500));
    }
    let out = tempfile::tempdir().unwrap();
    let mut first = download("first", &a.url("/files/f?1"), &out.path().join("1"));
    first["auth"] = json!({"user": "u", "password": "pw-first"});
    first["headers"] = json!({"X-Api-Key": "first"});
    let requests = vec![
        first,
        download("to-b", &b.url("/files/f?2"), &out.path().join("2")),
        download("to-a", &a.url("/files/f?3"), &out.path().join("3")),
    ];
    let run = client::run(&["--max-parallel", "1"], &requests);
    assert_eq!(run.status, 0, "{:?}", run.events);
    let r = &seen(&a, "/files/f?1")[0];
    assert_eq!(
        r.header("authorization"),
        Some(basic("u", "pw-first").as_str())
    );
    assert_eq!(r.header("x-api-key"), Some("first"));
    for (server, path) in [(&b, "/files/f?2"), (&a, "/files/f?3")] {
        let r = &seen(server, path)[0];
        assert_eq!(r.header("authorization"), None, "{path}: {r:?}");
        assert_eq!(r.header("x-api-key"), None, "{path}: {r:?}");
    }
}

#[test]
fn netrc_credentials_go_to_their_host_only() {
    // The netrc names 127.0.0.1; 127.0.0.2 is another host.
    let a = TestServer::start_on("127.0.0.1", Stats::new());
    let b = TestServer::start_on("127.0.0.2", Stats::new());
    for server in [&a, &b] {
        server.add_file("f", bytes(10, 500));
    }
    let home = tempfile::tempdir().unwrap();
    let netrc = home.path().join("netrc");
    std::fs::write(&netrc, "machine 127.0.0.1 login nu password pw-netrc\n").unwrap();
    std::fs::copy(&netrc, home.path().join(".netrc")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut own = download("own", &a.url("/files/f?own"), &out.path().join("own"));
    own["auth"] = json!({"user": "ru", "password": "pw-request"});
    let requests = [
        download("a", &a.url("/files/f?a"), &out.path().join("a")),
        download("b", &b.url("/files/f?b"), &out.path().join("b")),
        download(
            "a-to-b",
            &redirect_to(&a, &b.url("/files/f?hop")),
            &out.path().join("h"),
        ),
        own,
    ];
    let file = netrc.to_str().unwrap();
    let run = client::run(&["--netrc-file", file], &requests);
    assert_eq!(run.status, 0, "{:?}", run.events);
    let header = |server: &TestServer, path: &str| {
        let seen = seen(server, path);
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        seen[0].header("authorization").map(str::to_owned)
    };
    let from_netrc = basic("nu", "pw-netrc");
    assert_eq!(
        header(&a, "/files/f?a").as_deref(),
        Some(from_netrc.as_str())
    );
    assert_eq!(header(&b, "/files/f?b"), None);
    assert_eq!(header(&b, "/files/f?hop"), None);
    // A request's own credentials win over the file's.
    let own = basic("ru", "pw-request");
    assert_eq!(header(&a, "/files/f?own").as_deref(), Some(own.as_str()));
    // `--netrc` reads ~/.netrc; without either flag no file is read.
    let plain = [download("c", &a.url("/files/f?c"), &out.path().join("c"))];
    let run = client::run_env(&["--netrc"], &[("HOME", home.path())], &plain);
    assert_eq!(run.status, 0);
    assert_eq!(
        header(&a, "/files/f?c").as_deref(),
        Some(from_netrc.as_str())
    );
    let plain = [download("d", &a.url("/files/f?d"), &out.path().join("d"))];
    let run = client::run_env(&[], &[("HOME", home.path())], &plain);
    assert_eq!(run.status, 0);
    assert_eq!(header(&a, "/files/f?d"), None);
}

#[test]
fn a_missing_netrc_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-netrc");
    let output = Command::new(client::binary())
        .arg("--netrc-file")
        .arg(&missing)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "no hello");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
}

#[test]
fn bad_auth_fields_are_invalid_and_never_echo_the_password() {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("x");
    let line = |auth: Value, url: &str| json!({"op": "download", "id": "x", "url": url, "dest": dest, "auth": auth});
    let requests = vec![
        line(json!({"user": "a:b", "password": "pw-colon"}), "http://h/x"),
        line(
            json!({"user": "a", "password": "pw-both"}),
            "http://u:pw-url@h/x",
        ),
        line(json!({"user": "a", "password": "pw\r\nX: 1"}), "http://h/x"),
        line(json!({"user": "a", "pass": "pw-typo"}), "http://h/x"),
        json!({"op": "mirrors", "set": "s", "urls": ["http://u:pw-set@h/"],
               "auth": {"user": "a", "password": "pw-set2"}}),
        json!({"op": "mirrors", "set": "t", "urls": ["http://u:pw-set3@h/"]}),
        json!({"op": "download", "id": "y", "mirror": "t", "path": "p", "dest": dest,
               "auth": {"user": "a", "password": "pw-own"}}),
    ];
    let (events, stderr, status) = run_captured(&[], &requests);
    assert_eq!(status, 1);
    let invalid: Vec<&Value> = events.iter().filter(|e| e["event"] == "invalid").collect();
    // Every line but the declaration of set `t`, which is fine alone.
    assert_eq!(invalid.len(), requests.len() - 1, "{events:?}");
    for event in &invalid {
        let message = event["error"]["message"].as_str().unwrap();
        assert!(message.contains("auth"), "{message}");
    }
    let text: String = events.iter().map(|e| e.to_string()).collect();
    for secret in [
        "pw-colon", "pw-both", "pw-url", "pw\\r", "pw-typo", "pw-set", "pw-own",
    ] {
        assert!(!text.contains(secret), "{secret}: {text}");
        assert!(!stderr.contains(secret), "{secret}: {stderr}");
    }
}
