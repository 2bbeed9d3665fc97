//! Interop with a real server: Debian's nginx, over plain HTTP/1.1 and over TLS with
//! HTTP/2. What the server logged (connection numbers, protocol) is the evidence.

mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};

use serde_json::json;
use support::client::{self, bytes, download, sha256_hex};
use support::nginx::Nginx;

fn files(root: &std::path::Path, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let body = bytes(500 + i as u64, 3000 + 37 * i);
            let name = format!("p{i}.rpm");
            std::fs::write(root.join(&name), &body).unwrap();
            (name, body)
        })
        .collect()
}

#[test]
fn https_with_http2_multiplexes_and_verifies_tls() {
    let root = tempfile::tempdir().unwrap();
    let files = files(root.path(), 200);
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let requests: Vec<_> = files
        .iter()
        .map(|(name, body)| {
            let url = format!("https://127.0.0.1:{}/{name}", nginx.https_port);
            let mut r = download(name, &url, &out.path().join(name));
            r["hashes"] = json!({"sha256": sha256_hex(body)});
            r
        })
        .collect();
    let cert = nginx.cert();
    let args = [
        "--ca-file",
        cert.to_str().unwrap(),
        "--max-parallel",
        "64",
        "--max-per-host",
        "2",
    ];
    let run = client::run(&args, &requests);
    assert_eq!(run.status, 0);
    for (name, body) in &files {
        run.done(name);
        assert_eq!(&std::fs::read(out.path().join(name)).unwrap(), body);
    }
    let log = nginx.access_log();
    assert_eq!(log.len(), 200);
    assert!(log
        .iter()
        .all(|(_, proto, status, _)| proto == "HTTP/2.0" && *status == 200));
    let connections: HashSet<u64> = log.iter().map(|(c, ..)| *c).collect();
    // --max-per-host counts connections: 200 transfers share 2 of them as HTTP/2 streams.
    assert!(
        connections.len() <= 2,
        "200 requests over HTTP/2 with --max-per-host 2 used {} connections",
        connections.len()
    );

    // Without the test CA the same server is refused: verification is on by default.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}/p0.rpm", nginx.https_port);
    let run = client::run(
        &["--retries", "0"],
        &[download("untrusted", &url, &dir.path().join("x"))],
    );
    assert_eq!(run.failed_kind("untrusted"), "tls");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

/// `--ca-file` is the whole trust: a certificate authority the system trusts through its
/// certificate directory (here the one `SSL_CERT_DIR` names) does not count beside it.
/// Without `--ca-file`, a directory named by `SSL_CERT_DIR` is honoured.
#[test]
fn ca_file_replaces_the_system_store_and_ssl_cert_dir_is_honoured() {
    let root = tempfile::tempdir().unwrap();
    let files = files(root.path(), 1);
    let nginx = Nginx::start(root.path());
    let url = format!("https://127.0.0.1:{}/{}", nginx.https_port, files[0].0);
    // A certificate directory in OpenSSL's hashed layout that trusts the server.
    let trusting = tempfile::tempdir().unwrap();
    std::fs::copy(nginx.cert(), trusting.path().join("server.pem")).unwrap();
    let rehashed = Command::new("openssl")
        .arg("rehash")
        .arg(trusting.path())
        .status()
        .expect("openssl runs");
    assert!(rehashed.success(), "openssl rehash");
    // An authority that has nothing to do with the server.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=another authority"])
        .arg("-keyout")
        .arg(other.path().join("key.pem"))
        .arg("-out")
        .arg(&other_ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(made.success(), "making another authority");
    let env = [("SSL_CERT_DIR", trusting.path())];
    let out = tempfile::tempdir().unwrap();

    let run = client::run_env(
        &["--retries", "0", "--ca-file", other_ca.to_str().unwrap()],
        &env,
        &[download("refused", &url, &out.path().join("refused"))],
    );
    assert_eq!(run.failed_kind("refused"), "tls");

    let run = client::run_env(
        &["--retries", "0"],
        &env,
        &[download("trusted", &url, &out.path().join("trusted"))],
    );
    run.done("trusted");
    assert_eq!(
        std::fs::read(out.path().join("trusted")).unwrap(),
        files[0].1
    );
    assert_eq!(client::entries(out.path()), vec!["trusted".to_string()]);
}

#[test]
fn plain_http_reuses_keepalive_connections() {
    let root = tempfile::tempdir().unwrap();
    let files = files(root.path(), 300);
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let requests: Vec<_> = files
        .iter()
        .map(|(name, body)| {
            let url = format!("http://127.0.0.1:{}/{name}", nginx.http_port);
            let mut r = download(name, &url, &out.path().join(name));
            r["hashes"] = json!({"sha256": sha256_hex(body)});
            r["size"] = json!(body.len());
            r
        })
        .collect();
    let run = client::run(&["--max-parallel", "8", "--max-per-host", "8"], &requests);
    assert_eq!(run.status, 0);
    for (name, body) in &files {
        assert_eq!(&std::fs::read(out.path().join(name)).unwrap(), body);
    }
    let log = nginx.access_log();
    assert_eq!(log.len(), 300);
    assert!(log.iter().all(|(_, proto, ..)| proto == "HTTP/1.1"));
    let connections: HashSet<u64> = log.iter().map(|(c, ..)| *c).collect();
    assert!(
        connections.len() <= 8,
        "300 requests used {} connections",
        connections.len()
    );
}

/// Redirects stay within http and https, and never lead from https down to plain http
/// (apt refuses that too): the request would go, and the answer come back, in the clear.
#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let files = files(root.path(), 1);
    let (name, body) = &files[0];
    let nginx = Nginx::start(root.path());
    let (http, https) = (nginx.http_port, nginx.https_port);
    let out = tempfile::tempdir().unwrap();
    let requests = [
        ("down", format!("https://127.0.0.1:{https}/to-http/{name}")),
        ("up", format!("http://127.0.0.1:{http}/to-https/{name}")),
        ("plain", format!("http://127.0.0.1:{http}/to-http/{name}")),
        (
            "secure",
            format!("https://127.0.0.1:{https}/to-https/{name}"),
        ),
    ]
    .map(|(id, url)| download(id, &url, &out.path().join(id)));
    let cert = nginx.cert();
    let run = client::run(
        &["--retries", "0", "--ca-file", cert.to_str().unwrap()],
        &requests,
    );
    assert_eq!(run.failed_kind("down"), "unsupported_scheme");
    let message = run.outcome("down")["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("never from https to http"), "{message}");
    assert!(!out.path().join("down").exists());
    for id in ["up", "plain", "secure"] {
        run.done(id);
        assert_eq!(&std::fs::read(out.path().join(id)).unwrap(), body, "{id}");
    }
    // The refused redirect was never followed: nginx saw no plain request for the file.
    let plain_gets = nginx
        .access_log()
        .iter()
        .filter(|(_, proto, _, uri)| proto == "HTTP/1.1" && uri == &format!("/{name}"))
        .count();
    assert_eq!(plain_gets, 1, "only `plain` fetched the file over http");
}

/// `--http1.1` turns HTTP/2 off: the same https downloads reach nginx (HTTP/2 on) as
/// HTTP/2.0 without the flag and as HTTP/1.1 with it, and `hello` offers `http2` only
/// without it.
#[test]
fn http1_1_turns_http2_off() {
    let root = tempfile::tempdir().unwrap();
    let files = files(root.path(), 3);
    let nginx = Nginx::start(root.path());
    let cert = nginx.cert();
    let out = tempfile::tempdir().unwrap();
    let requests = |tag: &str| -> Vec<serde_json::Value> {
        files
            .iter()
            .map(|(name, body)| {
                let url = format!("https://127.0.0.1:{}/{name}", nginx.https_port);
                let id = format!("{tag}-{name}");
                let mut r = download(&id, &url, &out.path().join(&id));
                r["hashes"] = json!({"sha256": sha256_hex(body)});
                r
            })
            .collect()
    };
    let features = |run: &client::Run| run.of("hello")[0]["features"].clone();
    let ca = ["--ca-file", cert.to_str().unwrap()];
    let run = client::run(&ca, &requests("two"));
    assert_eq!(run.status, 0, "{:?}", run.events);
    assert!(features(&run).as_array().unwrap().contains(&json!("http2")));
    let protocols = |log: Vec<(String, String)>| -> Vec<String> {
        log.into_iter().map(|(protocol, _)| protocol).collect()
    };
    assert_eq!(protocols(nginx.agents()), vec!["HTTP/2.0"; 3]);

    let run = client::run(&[ca[0], ca[1], "--http1.1"], &requests("one"));
    assert_eq!(run.status, 0, "{:?}", run.events);
    assert!(!features(&run).as_array().unwrap().contains(&json!("http2")));
    let log = protocols(nginx.agents());
    assert_eq!(log[3..], vec!["HTTP/1.1"; 3], "{log:?}");
}

/// The User-Agent: `fetchmux/<version> libcurl/<version>` by default, `--user-agent` when
/// given, and a request's own `User-Agent` header over either; urlgrabber's `user_agent`
/// over the flag too. nginx's log shows what arrived.
#[test]
fn the_user_agent_is_ours_unless_the_flag_or_the_request_says_otherwise() {
    let root = tempfile::tempdir().unwrap();
    let files = files(root.path(), 1);
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/p0.rpm", nginx.http_port);
    let plain = download("plain", &url, &out.path().join("plain"));
    let mut own = download("own", &url, &out.path().join("own"));
    own["headers"] = json!({"User-Agent": "pm/7 (own)"});
    let run = client::run(&["--max-parallel", "1"], std::slice::from_ref(&plain));
    let libcurl = run.of("hello")[0]["libcurl"].as_str().unwrap().to_string();
    let agents = |from: usize| -> Vec<String> {
        nginx.agents()[from..]
            .iter()
            .map(|(_, a)| a.clone())
            .collect()
    };
    assert_eq!(
        agents(0),
        [format!(
            "fetchmux/{} libcurl/{libcurl}",
            env!("CARGO_PKG_VERSION")
        )]
    );
    let run = client::run(
        &["--user-agent", "flag/2", "--max-parallel", "1"],
        &[plain, own],
    );
    assert_eq!(run.status, 0, "{:?}", run.events);
    let mut seen = agents(1);
    seen.sort();
    assert_eq!(seen, ["flag/2", "pm/7 (own)"]);

    // urlgrabber's own option wins over the flag.
    let line = format!(
        "url='{url}' filename='{}' user_agent='urlgrabber/4.1.0' size=0\n",
        out.path().join("ug").display()
    );
    let mut child = Command::new(client::binary())
        .args(["--user-agent", "flag/2", "urlgrabber-ext-down"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(agents(3), ["urlgrabber/4.1.0"]);
    assert_eq!(
        std::fs::read(out.path().join("ug")).unwrap(),
        files[0].1,
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
