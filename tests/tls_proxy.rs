//! TLS trust and client certificates, and proxies, against real servers: nginx with
//! certificates made by openssl for the test, tinyproxy and microsocks. The evidence is what
//! those servers logged (the client certificate each request carried, the requests a proxy
//! forwarded) besides the files and events.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::client::{run_logged, sha256_hex, Run};
use support::proxy::Proxy;
use support::tls::{Pki, TlsNginx};

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
    assert!(failed_message(&run, "expired").contains("expired"), "{:?}", run.events);
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
    assert_fetched(&run, "encrypted-key", root.path(), out.path(), "private/f2.bin");

    let log = nginx.log();
    let seen: Vec<(u16, Option<&str>)> = log
        .iter()
        .map(|l| (l.status, l.client.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [(403, None), (200, Some("CN=client-a")), (200, Some("CN=client-a"))],
        "{log:?}"
    );
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
            requests.push(json!({"op": "download", "id": id, "mirror": set, "path": path,
                "dest": out.path().join(&id), "hashes": {"sha256": sha256_hex(&body)}}));
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
        assert_fetched(&run, &format!("A{i}"), root.path(), out.path(), &format!("private/f{i}.bin"));
        assert_fetched(&run, &format!("B{i}"), root.path(), out.path(), &format!("private/f{i}.bin"));
        assert_fetched(&run, &format!("plain{i}"), root.path(), out.path(), &format!("pub/f{i}.bin"));
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
    for (event, field) in invalid.iter().zip(["tls.cert", "tls.key_password_file", "proxy"]) {
        let message = event["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
}
