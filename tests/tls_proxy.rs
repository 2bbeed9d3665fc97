//! TLS trust and client certificates, and proxies, against real servers: nginx with
//! certificates made by openssl for the test, tinyproxy and microsocks. The evidence is what
//! those servers logged (the client certificate each request carried, the requests a proxy
//! forwarded) besides the files and events.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::client::{run_logged, sha256_hex, Run};
use support::proxy::Proxy;
use support::tls::{Pki, SServer, TlsNginx};

/// Files under `pub/` and `private/` of a new root.
fn root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for dir in ["pub", "private"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
        for i in 0..4 {
            let body = support::client::bytes(i + dir.len() as u64 * 10, 5000 + 311 * i as usize);
            std::fs::write(root.path().join(format!("{dir}/f{i}.bin")), body).unwrap();
        }
    }
    root
}

/// A download of `url` into `out` checked against the served file under `root`.
fn get(id: &str, url: &str, root: &Path, out: &Path) -> Value {
    let path = url.split_once("://").unwrap().1.split_once('/').unwrap().1;
    let body = std::fs::read(root.join(path)).unwrap();
    json!({"op": "download", "id": id, "url": url, "dest": out.join(id),
           "size": body.len(), "hashes": {"sha256": sha256_hex(&body)}})
}

/// `done`, with the bytes on disk those of the served file.
fn assert_fetched(run: &Run, id: &str, root: &Path, out: &Path, path: &str) {
    run.done(id);
    let want = std::fs::read(root.join(path)).unwrap();
    assert_eq!(std::fs::read(out.join(id)).unwrap(), want, "{id}");
}

fn failed_message(run: &Run, id: &str) -> String {
    run.outcome(id)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

const ONE_TRY: [&str; 2] = ["--retries", "0"];

#[test]
fn an_unknown_ca_fails_as_tls_and_ca_file_or_ca_path_trusts_it() {
    let (pki, root, out) = (Pki::make(), root(), tempfile::tempdir().unwrap());
    let nginx = TlsNginx::start(root.path(), &pki);
    let url = format!("https://127.0.0.1:{}/pub/f1.bin", nginx.a);
    let (run, _) = run_logged(&ONE_TRY, &[], &[get("x", &url, root.path(), out.path())]);
    assert_eq!(run.failed_kind("x"), "tls");
    let message = failed_message(&run, "x");
    assert!(message.contains("local issuer"), "{message}");

    let ca_file = pki.arg("ca-a.pem");
    let (run, _) = run_logged(
        &["--ca-file", &ca_file],
        &[],
        &[get("f", &url, root.path(), out.path())],
    );
    assert_fetched(&run, "f", root.path(), out.path(), "pub/f1.bin");

    let dir = pki.hashed_dir("a");
    let (run, _) = run_logged(
        &["--ca-path", dir.to_str().unwrap()],
        &[],
        &[get("p", &url, root.path(), out.path())],
    );
    assert_fetched(&run, "p", root.path(), out.path(), "pub/f1.bin");
    assert_eq!(run.status, 0);
}

#[test]
fn expired_and_wrong_host_certificates_fail_as_tls_with_the_reason() {
    let (pki, root, out) = (Pki::make(), root(), tempfile::tempdir().unwrap());
    let nginx = TlsNginx::start(root.path(), &pki);
    let ca_file = pki.arg("ca-a.pem");
    let requests = [
        get(
            "expired",
            &format!("https://127.0.0.1:{}/pub/f0.bin", nginx.expired),
            root.path(),
            out.path(),
        ),
        get(
            "wrong",
            &format!("https://127.0.0.1:{}/pub/f0.bin", nginx.wrong_host),
            root.path(),
            out.path(),
        ),
    ];
    let (run, _) = run_logged(&["--retries", "0", "--ca-file", &ca_file], &[], &requests);
    assert_eq!(run.failed_kind("expired"), "tls");
    assert!(
        failed_message(&run, "expired").contains("expired"),
        "{:?}",
        run.events
    );
    assert_eq!(run.failed_kind("wrong"), "tls");
    let message = failed_message(&run, "wrong");
    assert!(message.contains("subject name"), "{message}");
    assert!(!out.path().join("expired").exists() && !out.path().join("wrong").exists());
}

#[test]
fn the_client_certificate_location_needs_cert_and_key() {
    let (pki, root, out) = (Pki::make(), root(), tempfile::tempdir().unwrap());
    let nginx = TlsNginx::start(root.path(), &pki);
    let url = format!("https://127.0.0.1:{}/private/f2.bin", nginx.a);
    let ca_file = pki.arg("ca-a.pem");
    let (cert, key) = (pki.arg("client-a.pem"), pki.arg("client-a.key"));
    let (encrypted, password) = (pki.arg("client-a-encrypted.key"), pki.arg("key-password"));

    let (run, _) = run_logged(
        &["--retries", "0", "--ca-file", &ca_file],
        &[],
        &[get("none", &url, root.path(), out.path())],
    );
    assert_eq!(run.failed_kind("none"), "http_status");
    assert_eq!(run.outcome("none")["error"]["status"], 403);

    let (run, _) = run_logged(
        &["--ca-file", &ca_file, "--cert", &cert, "--key", &key],
        &[],
        &[get("plain-key", &url, root.path(), out.path())],
    );
    assert_fetched(&run, "plain-key", root.path(), out.path(), "private/f2.bin");

    let with_password = [
        "--ca-file",
        &ca_file,
        "--cert",
        &cert,
        "--key",
        &encrypted,
        "--key-password-file",
        &password,
    ];
    let (run, _) = run_logged(
        &with_password,
        &[],
        &[get("encrypted-key", &url, root.path(), out.path())],
    );
    assert_fetched(
        &run,
        "encrypted-key",
        root.path(),
        out.path(),
        "private/f2.bin",
    );

    // The wrong passphrase: the key cannot be loaded, a TLS failure that says what to check.
    let wrong = pki.path("wrong-password");
    std::fs::write(&wrong, "not it\n").unwrap();
    let mut args = with_password.to_vec();
    args[7] = wrong.to_str().unwrap();
    args.extend(["--retries", "0"]);
    let (run, _) = run_logged(
        &args,
        &[],
        &[get("bad-pass", &url, root.path(), out.path())],
    );
    assert_eq!(run.failed_kind("bad-pass"), "tls");
    let message = failed_message(&run, "bad-pass");
    assert!(message.contains("--key-password-file"), "{message}");

    let log = nginx.log();
    let seen: Vec<(u16, Option<&str>)> = log
        .iter()
        .map(|l| (l.status, l.client.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (403, None),
            (200, Some("CN=client-a")),
            (200, Some("CN=client-a"))
        ],
        "{log:?}"
    );
}

/// A server that requires a client certificate in the handshake (TLS 1.3: its refusal comes
/// after the handshake, as a failed read): `tls`, saying so, and `--cert/--key` satisfy it.
#[test]
fn a_handshake_that_requires_a_client_certificate_fails_as_tls() {
    let pki = Pki::make();
    let out = tempfile::tempdir().unwrap();
    let server = SServer::start(&pki);
    let url = format!("https://127.0.0.1:{}/", server.port);
    let request = |id: &str| {
        json!({"op": "download", "id": id, "url": url,
                                    "dest": out.path().join(id)})
    };
    let ca_file = pki.arg("ca-a.pem");
    let (run, _) = run_logged(
        &["--retries", "0", "--ca-file", &ca_file],
        &[],
        &[request("no-cert")],
    );
    assert_eq!(run.failed_kind("no-cert"), "tls");
    let message = failed_message(&run, "no-cert");
    assert!(
        message.contains("certificate required") && message.contains("--cert"),
        "{message}"
    );

    let (cert, key) = (pki.arg("client-a.pem"), pki.arg("client-a.key"));
    let args = [
        "--retries",
        "0",
        "--ca-file",
        &ca_file,
        "--cert",
        &cert,
        "--key",
        &key,
    ];
    let (run, _) = run_logged(&args, &[], &[request("cert")]);
    run.done("cert");
    let page = std::fs::read_to_string(out.path().join("cert")).unwrap();
    assert!(page.contains("s_server"), "{page}");
}

#[test]
fn insecure_trusts_anything_and_says_so() {
    let (pki, root, out) = (Pki::make(), root(), tempfile::tempdir().unwrap());
    let nginx = TlsNginx::start(root.path(), &pki);
    let url = format!("https://127.0.0.1:{}/pub/f3.bin", nginx.a);
    let (run, stderr) = run_logged(
        &["--insecure"],
        &[],
        &[get("i", &url, root.path(), out.path())],
    );
    assert_fetched(&run, "i", root.path(), out.path(), "pub/f3.bin");
    assert_eq!(run.of("hello")[0]["insecure"], true);
    assert_eq!(stderr.matches("WARNING: --insecure").count(), 1, "{stderr}");

    let (run, stderr) = run_logged(&[], &[], &[]);
    assert!(run.of("hello")[0].get("insecure").is_none());
    assert!(!stderr.contains("WARNING"), "{stderr}");
}

/// Two mirror sets, each with its own CA and client certificate, and plain URLs with the
/// helper-wide settings (no certificate), all through one recycled handle
/// (`--max-parallel 1`): each request carries its own certificate and no other.
#[test]
fn mirror_sets_have_their_own_trust_and_certificate_and_nothing_leaks() {
    let (pki, root, out) = (Pki::make(), root(), tempfile::tempdir().unwrap());
    let nginx = TlsNginx::start(root.path(), &pki);
    let set = |name: &str, port: u16, ca: &str| {
        json!({"op": "mirrors", "set": name, "urls": [format!("https://127.0.0.1:{port}/")],
               "tls": {"ca_file": pki.path(&format!("ca-{ca}.pem")),
                       "cert": pki.path(&format!("client-{ca}.pem")),
                       "key": pki.path(&format!("client-{ca}.key"))}})
    };
    let mut requests = vec![set("A", nginx.a, "a"), set("B", nginx.b, "b")];
    let mut expected = Vec::new();
    for i in 0..4 {
        let path = format!("private/f{i}.bin");
        let body = std::fs::read(root.path().join(&path)).unwrap();
        for (set, port, client) in [("A", nginx.a, "CN=client-a"), ("B", nginx.b, "CN=client-b")] {
            let id = format!("{set}{i}");
            requests.push(
                json!({"op": "download", "id": id, "mirror": set, "path": path,
                "dest": out.path().join(&id), "hashes": {"sha256": sha256_hex(&body)}}),
            );
            expected.push((port, Some(client.to_string()), format!("/{path}")));
        }
        // Plain URL to server b: helper-wide trust (--ca-file), no client certificate.
        let url = format!("https://127.0.0.1:{}/pub/f{i}.bin", nginx.b);
        requests.push(get(&format!("plain{i}"), &url, root.path(), out.path()));
        expected.push((nginx.b, None, format!("/pub/f{i}.bin")));
    }
    let ca_b = pki.arg("ca-b.pem");
    let args = ["--max-parallel", "1", "--retries", "0", "--ca-file", &ca_b];
    let (run, _) = run_logged(&args, &[], &requests);
    for i in 0..4 {
        assert_fetched(
            &run,
            &format!("A{i}"),
            root.path(),
            out.path(),
            &format!("private/f{i}.bin"),
        );
        assert_fetched(
            &run,
            &format!("B{i}"),
            root.path(),
            out.path(),
            &format!("private/f{i}.bin"),
        );
        assert_fetched(
            &run,
            &format!("plain{i}"),
            root.path(),
            out.path(),
            &format!("pub/f{i}.bin"),
        );
    }
    let mut logged: Vec<_> = nginx
        .log()
        .into_iter()
        .map(|l| (l.port, l.client, l.uri))
        .collect();
    logged.sort();
    expected.sort();
    assert_eq!(logged, expected);
}

#[test]
fn files_named_in_options_are_checked_at_start() {
    let pki = Pki::make();
    let missing = pki.arg("missing.pem");
    let ca_file = pki.arg("ca-a.pem");
    let dir = pki.arg("");
    let cases: [(&[&str], &str); 5] = [
        (&["--cert", &missing], "missing.pem"),
        (&["--ca-path", &ca_file], "not a directory"),
        (&["--key-password-file", &missing], "missing.pem"),
        (&["--key", &ca_file], "--cert"),
        (&["--proxy", "127.0.0.1:3128"], "not a proxy URL"),
    ];
    for (args, says) in cases {
        let (run, stderr) = run_logged(args, &[], &[]);
        assert_eq!(run.status, 2, "{args:?}");
        assert!(run.events.is_empty(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let _ = dir;
    // The same files in a mirror set are checked when it is declared.
    let bad = [
        json!({"op": "mirrors", "set": "s", "urls": ["https://127.0.0.1:1/"],
               "tls": {"cert": missing}}),
        json!({"op": "mirrors", "set": "s", "urls": ["https://127.0.0.1:1/"],
               "tls": {"key_password_file": missing, "cert": ca_file}}),
        json!({"op": "mirrors", "set": "s", "urls": ["https://127.0.0.1:1/"],
               "proxy": "proxy:3128"}),
    ];
    let (run, _) = run_logged(&[], &[], &bad);
    let invalid = run.of("invalid");
    assert_eq!(invalid.len(), 3, "{:?}", run.events);
    for (event, field) in invalid
        .iter()
        .zip(["tls.cert", "tls.key_password_file", "proxy"])
    {
        let message = event["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
}

/// An http and an https URL of server a, with the request for each.
fn through_proxy_requests(nginx: &TlsNginx, root: &Path, out: &Path, tag: &str) -> Vec<Value> {
    vec![
        get(
            &format!("{tag}-http"),
            &format!("http://127.0.0.1:{}/pub/f0.bin", nginx.http),
            root,
            out,
        ),
        get(
            &format!("{tag}-https"),
            &format!("https://127.0.0.1:{}/pub/f1.bin", nginx.a),
            root,
            out,
        ),
    ]
}

#[test]
fn downloads_go_through_tinyproxy_with_and_without_authentication() {
    let (pki, root, out) = (Pki::make(), root(), tempfile::tempdir().unwrap());
    let nginx = TlsNginx::start(root.path(), &pki);
    let ca_file = pki.arg("ca-a.pem");
    let (r, o) = (root.path(), out.path());

    let open = Proxy::tinyproxy(None);
    let proxy = open.url("http", None);
    let args = ["--retries", "0", "--ca-file", &ca_file, "--proxy", &proxy];
    let (run, _) = run_logged(&args, &[], &through_proxy_requests(&nginx, r, o, "open"));
    assert_fetched(&run, "open-http", r, o, "pub/f0.bin");
    assert_fetched(&run, "open-https", r, o, "pub/f1.bin");
    // The environment, as libcurl reads it, when there is no --proxy.
    let env = [
        ("http_proxy", proxy.as_str()),
        ("https_proxy", proxy.as_str()),
    ];
    let args = ["--retries", "0", "--ca-file", &ca_file];
    let (run, _) = run_logged(&args, &env, &through_proxy_requests(&nginx, r, o, "env"));
    assert_fetched(&run, "env-http", r, o, "pub/f0.bin");
    assert_fetched(&run, "env-https", r, o, "pub/f1.bin");
    // As documented (docs/configuration.md): libcurl ignores HTTP_PROXY in capitals, and
    // no_proxy / --noproxy send a host around any proxy, even --proxy's (here a dead one).
    let env = [("HTTP_PROXY", proxy.as_str())];
    let (run, _) = run_logged(&args, &env, &through_proxy_requests(&nginx, r, o, "upper"));
    assert_fetched(&run, "upper-http", r, o, "pub/f0.bin");
    let dead = "http://127.0.0.1:1";
    let bypass = [
        "--ca-file",
        &ca_file,
        "--proxy",
        dead,
        "--noproxy",
        "127.0.0.1",
    ];
    let (run, _) = run_logged(
        &bypass,
        &[],
        &through_proxy_requests(&nginx, r, o, "bypass"),
    );
    assert_fetched(&run, "bypass-http", r, o, "pub/f0.bin");
    assert_fetched(&run, "bypass-https", r, o, "pub/f1.bin");
    let env = [("no_proxy", "127.0.0.1")];
    let dead_args = ["--ca-file", &ca_file, "--proxy", dead];
    let (run, _) = run_logged(
        &dead_args,
        &env,
        &through_proxy_requests(&nginx, r, o, "np"),
    );
    assert_fetched(&run, "np-http", r, o, "pub/f0.bin");
    let log = open.log_text();
    let plain = format!("GET http://127.0.0.1:{}/pub/f0.bin", nginx.http);
    let tunnel = format!("CONNECT 127.0.0.1:{}", nginx.a);
    assert_eq!(log.matches(&plain).count(), 2, "{log}");
    assert_eq!(log.matches(&tunnel).count(), 2, "{log}");

    let guarded = Proxy::tinyproxy(Some(("fm", "s3cret")));
    let args = |proxy: &str, user: &str| -> Vec<String> {
        let mut a = vec!["--retries", "0", "--ca-file", &ca_file, "--proxy", proxy];
        if !user.is_empty() {
            a.extend(["--proxy-user", user]);
        }
        a.into_iter().map(String::from).collect()
    };
    let run_with = |args: Vec<String>, tag: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_logged(&args, &[], &through_proxy_requests(&nginx, r, o, tag))
    };
    let (run, _) = run_with(args(&guarded.url("http", None), "fm:s3cret"), "user");
    assert_fetched(&run, "user-http", r, o, "pub/f0.bin");
    assert_fetched(&run, "user-https", r, o, "pub/f1.bin");
    let (run, _) = run_with(args(&guarded.url("http", Some("fm:s3cret")), ""), "inurl");
    assert_fetched(&run, "inurl-http", r, o, "pub/f0.bin");
    assert_fetched(&run, "inurl-https", r, o, "pub/f1.bin");
    // No credentials: 407 to both. A wrong password: tinyproxy answers 401 (with
    // WWW-Authenticate, not Proxy-Authenticate): the tunnel's answer is the proxy's, but a
    // plain request's 401 cannot be told from the server's, so it stays `http_status`.
    let (run, _) = run_with(args(&guarded.url("http", None), ""), "none");
    let (wrong, stderr) = run_with(args(&guarded.url("http", None), "fm:wrong"), "wrong");
    for (run, id, status) in [
        (&run, "none-http", 407),
        (&run, "none-https", 407),
        (&wrong, "wrong-https", 401),
    ] {
        assert_eq!(run.failed_kind(id), "proxy", "{id}");
        let message = failed_message(run, id);
        assert!(message.contains(&status.to_string()), "{message}");
        assert!(message.contains("--proxy-user"), "{message}");
        assert!(!message.contains("wrong"), "{message}");
    }
    assert_eq!(wrong.failed_kind("wrong-http"), "http_status");
    assert_eq!(wrong.outcome("wrong-http")["error"]["status"], 401);
    assert!(!stderr.contains("fm:wrong"), "{stderr}");
    let log = guarded.log_text();
    assert_eq!(log.matches(&plain).count(), 4, "{log}");
    assert_eq!(log.matches(&tunnel).count(), 4, "{log}");
}

#[test]
fn downloads_go_through_microsocks_with_socks5_and_socks5h() {
    let (pki, root, out) = (Pki::make(), root(), tempfile::tempdir().unwrap());
    let nginx = TlsNginx::start(root.path(), &pki);
    let ca_file = pki.arg("ca-a.pem");
    let (r, o) = (root.path(), out.path());
    let socks = Proxy::microsocks();
    // socks5: the helper resolves names (the proxy is asked for 127.0.0.1); socks5h: the
    // proxy does (it is asked for `localhost`).
    for (scheme, host) in [("socks5", "127.0.0.1"), ("socks5h", "localhost")] {
        let proxy = socks.url(scheme, None);
        let args = ["--retries", "0", "--ca-file", &ca_file, "--proxy", &proxy];
        let requests = [
            get(
                &format!("{scheme}-http"),
                &format!("http://{host}:{}/pub/f2.bin", nginx.http),
                r,
                o,
            ),
            get(
                &format!("{scheme}-https"),
                &format!("https://{host}:{}/pub/f3.bin", nginx.a),
                r,
                o,
            ),
        ];
        let (run, _) = run_logged(&args, &[], &requests);
        assert_fetched(&run, &format!("{scheme}-http"), r, o, "pub/f2.bin");
        assert_fetched(&run, &format!("{scheme}-https"), r, o, "pub/f3.bin");
    }
    let log = socks.log_text();
    for host in ["127.0.0.1", "localhost"] {
        for port in [nginx.http, nginx.a] {
            let line = format!("connected to {host}:{port}");
            assert_eq!(log.matches(&line).count(), 1, "{line} in {log}");
        }
    }
}

/// A proxy that is not there fails as `proxy`, and the mirror behind it is not blamed: after
/// more failures than ban a mirror, the same mirror, declared again without the proxy, serves.
#[test]
fn a_dead_proxy_fails_as_proxy_and_the_mirror_is_not_blamed() {
    let (pki, root, out) = (Pki::make(), root(), tempfile::tempdir().unwrap());
    let nginx = TlsNginx::start(root.path(), &pki);
    let (r, o) = (root.path(), out.path());
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mirror = format!("http://127.0.0.1:{}/", nginx.http);
    let body = std::fs::read(r.join("pub/f1.bin")).unwrap();
    let fetch = |id: &str| {
        json!({"op": "download", "id": id, "mirror": "m", "path": "pub/f1.bin",
               "dest": o.join(id), "hashes": {"sha256": sha256_hex(&body)}})
    };
    let mut helper = support::client::Helper::spawn_env(
        &["--retries", "6", "--max-retry-wait", "1"],
        std::process::Stdio::piped(),
        &[],
    );
    helper.send(&json!({"op": "mirrors", "set": "m", "urls": [mirror],
                        "proxy": format!("http://127.0.0.1:{dead}")}));
    helper.send(&fetch("via-dead"));
    let failed = helper.wait_for("via-dead failed", |e| {
        e["id"] == "via-dead" && e["event"] == "failed"
    });
    assert_eq!(failed["error"]["kind"], "proxy", "{failed}");
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 7, "{failed}");
    assert!(
        attempts.iter().all(|a| a["error"]["kind"] == "proxy"),
        "{failed}"
    );
    helper.send(&json!({"op": "mirrors", "set": "m", "urls": [mirror], "proxy": ""}));
    helper.send(&fetch("direct"));
    let run = helper.finish();
    assert_fetched(&run, "direct", r, o, "pub/f1.bin");
}
